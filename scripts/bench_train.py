#!/usr/bin/env python
"""Training throughput: tuneforge vs TRL's SFTTrainer (default, and packing=True) vs a plain
Hugging Face Trainer with group_by_length, on the same model, rows and settings, in one run.

Model: a random Llama (hidden 512, 8 layers, 8 heads, MLP 1376, vocab of the tiny offline
tokenizer, ~26 M parameters) saved with that tokenizer. Rows: Dolly-style instruction rows with
realistic length variance (prompts 20-400 tokens, answers 5-200, skewed short). Settings: batch
8, max length 1024, 1 epoch, fp32, learning rate 1e-4, linear schedule, no evaluation, no ROUGE,
no gradient checkpointing (TRL's default turns it on; here every side runs without it).

Each side runs in its own process, one after the other, so its peak RSS (wait4) is its own:
- tuneforge: the real job (`tuneforge.recipes.run` on a temporary /opt/ml tree), which also
  writes its end-of-epoch resumable checkpoint inside the timed loop and the model afterwards;
  its defaults: length-grouped batches, the chunked loss, packing=auto (off without a varlen kernel);
- tuneforge_packed: the same job with packing=true (best-fit bins of max length, block-diagonal
  attention: what packing costs where no varlen kernel exists, e.g. SDPA on CPU);
- tuneforge_random: the same job with group_by_length=false (random batches: the loss control for
  length-grouped batching, which must end within 2 % of it);
- trl: SFTTrainer on a prompt/completion dataset of the same rendered prompts and answers;
- trl_packed: the same with packing=True (TRL's default "bfd" packing, padding-free);
- hf_grouped: transformers.Trainer with train_sampling_strategy="group_by_length" on tuneforge's
  token ids and collator.
Real tokens/s = non-padding input tokens trained / time inside trainer.train(); padding share =
padding positions / all positions fed to the model.

--loss-memory instead measures what the chunked loss saves: one forward and backward of a Llama
with a 128k vocabulary (Llama 3's 128,256; hidden 256, 2 layers), batch 4 x 1024, labels on the
last 35 % of each row, through the Trainer's compute_loss with the standard and the chunked loss,
each in its own process; the peak RSS above the loaded model is the step's memory.

    .venv/bin/python scripts/bench_train.py [--lora] [--rows 480] [--sides tuneforge,trl,...]
    .venv/bin/python scripts/bench_train.py --loss-memory
    .venv/bin/python scripts/bench_train.py --method dpo [--rows 32] [--repeats 2]

--method dpo instead compares tuneforge's DPO job (training_method=dpo) with TRL's DPOTrainer used
directly, on the same random Llama, the same generated preference pairs (prompts 20-300 tokens,
chosen and rejected answers 5-150 each, skewed short; each side gets the pairs as tuneforge renders
them), LoRA r=8 alpha 32 dropout 0.05 on q_proj,v_proj (the reference: the base with the adapter
off, on both sides), beta 0.1, sigmoid loss, batch 8 pairs, max length 1024, 1 epoch, fp32, lr
1e-4. tuneforge groups pairs of similar length into a batch (group_by_length, its default);
tuneforge_dpo_random is the same job with random batches (the control). The sides alternate
(tuneforge, tuneforge random, TRL, tuneforge, ...) for --repeats rounds, each in its own process. Tokens/s = tokens of prompt+chosen and prompt+rejected of every pair / time inside
trainer.train(); s/step = that time / optimizer steps; peak RSS from wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))

SIDES = ("tuneforge", "tuneforge_packed", "tuneforge_random", "trl", "trl_packed", "hf_grouped")
BATCH, MAX_LEN, LR, SEED = 8, 1024, 1e-4, 10
TEMPLATE = {"prompt": "{instruction}", "completion": "{response}"}


# ------------------------------------------------------------------ shared inputs
def build_model(out: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tuneforge.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 2048
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                         num_key_value_heads=8, intermediate_size=1376, max_position_embeddings=2048,
                         tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def write_rows(model_dir: Path, channel: Path, rows: int) -> None:
    """Instruction rows whose prompt and answer token counts follow a skewed spread (most short,
    some long), as in Dolly-style data."""
    from transformers import AutoTokenizer

    from tuneforge.samples import WORDS

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(1)
    text = _text_maker(tokenizer, rng, WORDS)
    channel.mkdir(parents=True)
    with open(channel / "data.jsonl", "w") as handle:
        for _ in range(rows):
            prompt, answer = int(20 + 380 * rng.random() ** 2), int(5 + 195 * rng.random() ** 2)
            handle.write(json.dumps({"instruction": text(prompt), "response": text(answer)}) + "\n")
    (channel / "template.json").write_text(json.dumps(TEMPLATE))


def _text_maker(tokenizer, rng: random.Random, words: list):
    """text(n): random words cut to exactly n tokens of `tokenizer`."""
    def text(tokens: int) -> str:
        ids = tokenizer(" ".join(rng.choice(words) for _ in range(tokens * 2)), add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:tokens]).strip()
    return text


class CountingCollator:
    """Counts real and padded positions of what the model is fed."""

    def __init__(self, inner, pad_id: int):
        self.inner, self.pad_id = inner, pad_id
        self.real = self.total = 0

    def __call__(self, features):
        batch = self.inner(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.real += int(mask.sum()) if mask is not None else int((ids != self.pad_id).sum())
        self.total += ids.numel()
        return batch


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")


def _examples(base: Path):
    from tuneforge.config import parse_hyperparameters
    from tuneforge.data import read_channel

    config = parse_hyperparameters({"instruction_tuned": "True"})
    return read_channel(base / "input" / "data" / "train", config)


def _timed_train(trainer, collator: CountingCollator) -> dict:
    trainer.data_collator = collator
    start = time.time()
    output = trainer.train()
    seconds = time.time() - start
    return {"train_s": round(seconds, 2), "tokens": collator.real, "train_loss": output.training_loss,
            "padding_share": round(1 - collator.real / collator.total, 4) if collator.total else 0.0}


# ------------------------------------------------------------------ sides
def run_tuneforge(base: Path, lora: bool, packing: str = "auto", group_by_length: bool = True) -> dict:
    from tuneforge.recipes import run

    hyperparameters = {"instruction_tuned": "True", "peft_type": "lora" if lora else "none", "lora_r": "8",
                       "epoch": "1", "per_device_train_batch_size": str(BATCH), "learning_rate": str(LR),
                       "max_input_length": str(MAX_LEN), "validation_split_ratio": "0", "rouge_samples": "0",
                       "knowledge_check": "False", "early_stopping_patience": "0", "seed": str(SEED),
                       "logging_steps": "10", "packing": packing, "group_by_length": str(group_by_length)}
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    assert run(base) == 0, (base / "output" / "failure").read_text()
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    packing = metrics["packing"]
    return {"train_s": metrics["train_runtime_s"], "tokens": metrics["train_tokens"],
            "train_loss": metrics["train_loss"], "loss": metrics["loss"]["kind"],
            "padding_share": packing["padding_share"] if packing["enabled"] else metrics["batching"]["padding_share"],
            "rows_mean_tokens": round(metrics["data"]["train"]["tokens"] / metrics["data"]["train"]["rows"], 1)}


def run_tuneforge_packed(base: Path, lora: bool) -> dict:
    return run_tuneforge(base, lora, packing="true")


def run_tuneforge_random(base: Path, lora: bool) -> dict:
    return run_tuneforge(base, lora, group_by_length=False)


def _training_args(cls, out: Path, **extra):
    import torch

    return cls(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=BATCH, learning_rate=LR,
               seed=SEED, data_seed=SEED, save_strategy="no", eval_strategy="no", logging_steps=10, report_to=[],
               disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
               gradient_checkpointing=False, **extra)


def run_trl(base: Path, lora: bool, packing: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model_dir = base / "input" / "data" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = _examples(base)
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in data.examples])
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = _training_args(SFTConfig, base / "trl-out", max_length=MAX_LEN, packing=packing)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=_lora_config() if lora else None)
    return _timed_train(trainer, CountingCollator(trainer.data_collator, tokenizer.pad_token_id))


def run_trl_packed(base: Path, lora: bool) -> dict:
    return run_trl(base, lora, packing=True)


def run_hf_grouped(base: Path, lora: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from tuneforge.data import Collator, tokenize_examples

    model_dir = base / "input" / "data" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = _examples(base)
    tokens = tokenize_examples(data.examples, tokenizer, data.prompt, max_len=MAX_LEN, max_out=128, seq2seq=False)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config())
    args = _training_args(TrainingArguments, base / "hf-out", remove_unused_columns=False,
                          train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=tokens.features, processing_class=tokenizer)
    return _timed_train(trainer, CountingCollator(Collator(tokenizer.pad_token_id), tokenizer.pad_token_id))


# ------------------------------------------------------------------ DPO
DPO_SIDES = ("tuneforge_dpo", "tuneforge_dpo_random", "trl_dpo")  # _random: group_by_length=false, the control
DPO_BETA = 0.1


def write_pairs(model_dir: Path, channel: Path, pairs: int) -> None:
    """Preference pairs: prompts 20-300 tokens, chosen and rejected answers 5-150 each (skewed short)."""
    from transformers import AutoTokenizer

    from tuneforge.samples import WORDS

    rng = random.Random(2)
    text = _text_maker(AutoTokenizer.from_pretrained(model_dir), rng, WORDS)
    channel.mkdir(parents=True)
    with open(channel / "pairs.jsonl", "w") as handle:
        for _ in range(pairs):
            prompt = text(int(20 + 280 * rng.random() ** 2))
            chosen, rejected = (text(int(5 + 145 * rng.random() ** 2)) for _ in range(2))
            handle.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


def _pair_rows(base: Path):
    """The pairs as tuneforge renders them for TRL (so both sides train on the same text), and the
    tokens one epoch feeds the model: prompt+chosen and prompt+rejected of every pair."""
    from transformers import AutoTokenizer

    from tuneforge.config import parse_hyperparameters
    from tuneforge.data import read_channel
    from tuneforge.llm.preference_data import preference_rows

    tokenizer = AutoTokenizer.from_pretrained(base / "input" / "data" / "model")
    source = read_channel(base / "input" / "data" / "train", parse_hyperparameters({"training_method": "dpo"}))
    rows = preference_rows(source.examples, tokenizer, source.prompt, {}).features
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    tokens = sum(count(r["prompt"] + r["chosen"]) + count(r["prompt"] + r["rejected"]) for r in rows)
    return tokenizer, rows, tokens


def run_tuneforge_dpo(base: Path, lora: bool, group_by_length: bool = True) -> dict:
    from tuneforge.recipes import run

    hyperparameters = {"group_by_length": str(group_by_length), "training_method": "dpo", "beta": str(DPO_BETA), "dpo_loss_type": "sigmoid", "peft_type": "lora",
                       "lora_r": "8", "lora_alpha": "32", "lora_dropout": "0.05", "target_modules": "q_proj,v_proj",
                       "epoch": "1", "per_device_train_batch_size": str(BATCH), "learning_rate": str(LR),
                       "max_input_length": str(MAX_LEN), "validation_split_ratio": "0", "rouge_samples": "0",
                       "knowledge_check": "False", "early_stopping_patience": "0", "seed": str(SEED), "logging_steps": "10"}
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    assert run(base) == 0, (base / "output" / "failure").read_text()
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    return {"train_s": metrics["train_runtime_s"], "steps": metrics["steps"], "tokens": _pair_rows(base)[2],
            "train_loss": metrics["train_loss"], "reward_accuracy": metrics.get("final_reward_accuracy"),
            "padding": metrics["batching"]["padding_share"]}


def run_tuneforge_dpo_random(base: Path, lora: bool) -> dict:
    return run_tuneforge_dpo(base, lora, group_by_length=False)


def run_trl_dpo(base: Path, lora: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer, rows, tokens = _pair_rows(base)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(base / "input" / "data" / "model", dtype=torch.float32)
    args = _training_args(DPOConfig, base / "trl-out", beta=DPO_BETA, loss_type=["sigmoid"], max_length=MAX_LEN)
    trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                         peft_config=_lora_config())
    start = time.time()
    output = trainer.train()
    seconds = time.time() - start
    accuracies = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    return {"train_s": round(seconds, 2), "steps": trainer.state.global_step, "tokens": tokens,
            "train_loss": output.training_loss, "reward_accuracy": accuracies[-1] if accuracies else None}


def dpo_bench(pairs: int, repeats: int) -> None:
    """tuneforge's DPO job (pairs grouped by length, its default), the same job with random batches
    (the control) and TRL's DPOTrainer, alternating, `repeats` rounds."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model")
        write_pairs(model_dir, root / "pairs", pairs)
        for round_ in range(1, repeats + 1):
            for side in DPO_SIDES:
                result = _child(side, _prepare(root, model_dir, root / "pairs", f"{side}-{round_}"), True)
                runs.append((side, round_, result))
    _print_machine()
    print(f"model: random Llama 512x8 (~26 M), LoRA r=8 alpha 32 on q_proj,v_proj; DPO beta {DPO_BETA} sigmoid; "
          f"{pairs} pairs, batch {BATCH} pairs, max length {MAX_LEN}, 1 epoch, fp32")
    print("| side | round | tokens/s | pairs/s | s/step | train loop s | process wall s | peak RSS GiB | padding | train loss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for side, round_, r in runs:
        padding = f"{r['padding']:.1%}" if "padding" in r else "-"
        print(f"| {side} | {round_} | {r['tokens_per_s']:,.1f} | {pairs / r['train_s']:.2f} | "
              f"{r['train_s'] / r['steps']:.2f} | {r['train_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{padding} | {r['train_loss']:.4f} |")
    mean = {side: {key: sum(r[key] for s, _, r in runs if s == side) / repeats for key in ("tokens_per_s", "peak_rss_gib")}
            for side in DPO_SIDES}
    theirs = mean["trl_dpo"]
    for side in ("tuneforge_dpo", "tuneforge_dpo_random"):
        ours = mean[side]
        print(f"{side}/trl_dpo (means of {repeats} rounds): tokens/s x{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}, "
              f"peak RSS x{ours['peak_rss_gib'] / theirs['peak_rss_gib']:.2f}")


# ------------------------------------------------------------------ loss memory
LOSS_ROLES = ("loss_standard", "loss_chunked")
LOSS_VOCAB, LOSS_BATCH, LOSS_LEN, LOSS_LABEL_SHARE = 128_256, 4, 1024, 0.35


def run_loss_memory(chunked: bool, out: Path) -> None:
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from tuneforge.llm.trainer import TrainerPlan, TuneforgeTrainer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=LOSS_VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    args = TrainingArguments(output_dir=str(out.parent / "trainer"), use_cpu=True, report_to=[])
    trainer = TuneforgeTrainer(model=model, args=args, plan=TrainerPlan(chunked_loss=chunked))
    ids = torch.randint(3, LOSS_VOCAB, (LOSS_BATCH, LOSS_LEN))
    labels = ids.clone()
    labels[:, :int(LOSS_LEN * (1 - LOSS_LABEL_SHARE))] = -100
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    loss = trainer.compute_loss(model, {"input_ids": ids, "labels": labels},
                                num_items_in_batch=labels[:, 1:].ne(-100).sum())
    loss.backward()
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write_text(json.dumps({"loss": loss.item(), "step_gib": round((peak - before) / 2**20, 2),
                               "step_s": round(seconds, 2)}))


def loss_memory() -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as tmp:
        for role in LOSS_ROLES:
            out = Path(tmp) / f"{role}.json"
            subprocess.run([sys.executable, __file__, "--role", role, "--out", str(out)], check=True,
                           env=dict(os.environ, TOKENIZERS_PARALLELISM="false"), stdout=subprocess.DEVNULL)
            results[role] = json.loads(out.read_text())
    print(f"Llama, vocabulary {LOSS_VOCAB:,}, hidden 256, 2 layers; batch {LOSS_BATCH} x {LOSS_LEN}, "
          f"{LOSS_LABEL_SHARE:.0%} label positions; one forward + backward, fp32, CPU")
    print("| loss | step memory above the model (peak RSS) GiB | step s | loss value |")
    print("|---|---|---|---|")
    for role, r in results.items():
        print(f"| {role.removeprefix('loss_')} | {r['step_gib']:.2f} | {r['step_s']:.1f} | {r['loss']:.6f} |")


# ------------------------------------------------------------------ driver
def _child(side: str, base: Path, lora: bool) -> dict:
    """One side in a fresh process; its own peak RSS comes from wait4."""
    out = base.parent / f"{side}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, __file__, "--role", side, "--base", str(base), "--out", str(out)]
    start = time.time()
    process = subprocess.Popen(command + (["--lora"] if lora else []), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{side} failed:\n{process.stderr.read().decode()[-3000:]}")
    result = json.loads(out.read_text())
    result.update(wall_s=round(wall, 1), peak_rss_gib=round(usage.ru_maxrss / 2**20, 2),
                  tokens_per_s=round(result["tokens"] / result["train_s"], 1))
    return result


def _print_machine() -> None:
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, python "
          f"{platform.python_version()}, {'GPU' if torch.cuda.is_available() else 'CPU only'}; {time.strftime('%Y-%m-%d')}")


def _prepare(root: Path, model_dir: Path, rows_dir: Path, side: str) -> Path:
    base = root / side / "opt" / "ml"
    (base / "input" / "config").mkdir(parents=True)
    shutil.copytree(model_dir, base / "input" / "data" / "model")
    shutil.copytree(rows_dir, base / "input" / "data" / "train")
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help="instruction rows (default 480), or with --method dpo pairs (32)")
    parser.add_argument("--lora", action="store_true", help="LoRA r=8 on q_proj,v_proj instead of full fine-tuning")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma list from {', '.join(SIDES)}")
    parser.add_argument("--loss-memory", action="store_true", help="measure the chunked loss's memory instead")
    parser.add_argument("--method", choices=("sft", "dpo"), default="sft",
                        help="dpo: tuneforge's DPO job vs TRL's DPOTrainer (LoRA; --rows = pairs, default 32)")
    parser.add_argument("--repeats", type=int, default=2, help="dpo: rounds of the two sides, alternating")
    parser.add_argument("--role", choices=SIDES + DPO_SIDES + LOSS_ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role in LOSS_ROLES:
        run_loss_memory(args.role == "loss_chunked", Path(args.out))
        return 0
    if args.loss_memory:
        loss_memory()
        return 0
    if args.method == "dpo" and not args.role:
        dpo_bench(args.rows or 32, args.repeats)
        return 0
    args.rows = args.rows or 480
    if args.role:
        result = globals()[f"run_{args.role}"](Path(args.base), args.lora)
        Path(args.out).write_text(json.dumps(result))
        return 0
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model")
        write_rows(model_dir, root / "rows", args.rows)
        results = {side: _child(side, _prepare(root, model_dir, root / "rows", side), args.lora) for side in sides}
    _print_machine()
    mean = results.get("tuneforge", {}).get("rows_mean_tokens")
    print(f"model: random Llama 512x8 (~26 M), {'LoRA r=8' if args.lora else 'full fine-tuning'}; {args.rows} rows"
          f"{f' (mean {mean} tokens)' if mean else ''}, batch {BATCH}, max length {MAX_LEN}, 1 epoch, fp32")
    ours = results.get("tuneforge")
    if ours:
        print(f"tuneforge loss: {ours['loss']}")
    print(f"| side | real tokens/s | train loop s | process wall s | peak RSS GiB | padding | final train loss |")
    print("|---|---|---|---|---|---|---|")
    for side, r in results.items():
        print(f"| {side} | {r['tokens_per_s']:,.1f} | {r['train_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{100 * r['padding_share']:.1f} % | {r['train_loss']:.4f} |")
    for peer in SIDES[1:]:
        if ours and peer in results:
            print(f"tuneforge/{peer}: tokens/s x{ours['tokens_per_s'] / results[peer]['tokens_per_s']:.2f}, "
                  f"peak RSS x{ours['peak_rss_gib'] / results[peer]['peak_rss_gib']:.2f}, "
                  f"final train loss {100 * (ours['train_loss'] / results[peer]['train_loss'] - 1):+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
