#!/usr/bin/env python
"""Training throughput and peak memory: tuneforge's recipe vs a plain Hugging Face Trainer loop.

Same tiny model, same tokenized data (tuneforge's tokenizer path, so both see the same tokens),
same batch size, learning rate, epochs and seed, on this machine, in one run; each side runs in
its own process so its peak resident memory is its own. tuneforge does what a job does: data
report, baseline and final evaluation, ROUGE generations, a resumable checkpoint each epoch, the
merged model and metrics. The peer only trains (no evaluation, no checkpoints) and is timed
around trainer.train(); so is tuneforge (train_runtime_s), plus each side's whole-process wall time.

    .venv/bin/python scripts/bench_train.py [--family llama] [--epochs 3] [--rows 320] [--lora]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))


def _hyperparameters(args) -> dict:
    return {"instruction_tuned": "True", "peft_type": "lora" if args.lora else "none", "epoch": str(args.epochs),
            "per_device_train_batch_size": str(args.batch), "learning_rate": "0.003", "seed": "10",
            "rouge_samples": "8", "max_output_length": "16", "logging_steps": "50", "early_stopping_patience": "0",
            "dataloader_num_workers": "0"}


def _prepare(args, root: Path) -> Path:
    from tuneforge.samples import write_sample_data
    from tuneforge.tiny import tiny_model

    base = root / "opt" / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(_hyperparameters(args)))
    import shutil

    shutil.copytree(tiny_model(args.family), base / "input" / "data" / "model")
    staged = write_sample_data("instruction", root / "staging", n_train=args.rows)
    shutil.move(str(staged["train"]), base / "input" / "data" / "train")
    shutil.move(str(staged["validation"]), base / "input" / "data" / "validation")
    return base


def run_tuneforge(base: Path) -> dict:
    from tuneforge.train.launcher import run

    assert run(base) == 0, (base / "output" / "failure").read_text()
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    tokens = metrics["data"]["train"]["tokens"] * metrics["epochs"]
    return {"train_s": metrics["train_runtime_s"], "tokens": tokens, "train_loss": metrics["train_loss"]}


def run_peer(base: Path) -> dict:
    """The plain loop: AutoModel + (optional) LoRA + Trainer on the same token ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from tuneforge.config import parse_hyperparameters
    from tuneforge.data import Collator, read_channel, select_and_split, tokenize_examples

    config = parse_hyperparameters(json.loads((base / "input" / "config" / "hyperparameters.json").read_text()))
    model_dir = base / "input" / "data" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = read_channel(base / "input" / "data" / "train", config)
    val = read_channel(base / "input" / "data" / "validation", config, prompt=data.prompt, fmt=data.format)
    train, _ = select_and_split(data.examples, val.examples, config)
    tokens = tokenize_examples(train, tokenizer, data.prompt, max_len=512, max_out=128, seq2seq=False, workers=None)
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if config.use_lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(base / "peer-out"), num_train_epochs=config.epoch,
                             per_device_train_batch_size=config.per_device_train_batch_size,
                             learning_rate=config.learning_rate, seed=config.seed, data_seed=config.seed,
                             save_strategy="no", eval_strategy="no", logging_steps=50, report_to=[],
                             disable_tqdm=True, use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=tokens.features,
                      data_collator=Collator(tokenizer.pad_token_id))
    start = time.time()
    output = trainer.train()
    return {"train_s": round(time.time() - start, 2), "tokens": tokens.tokens * config.epoch,
            "train_loss": output.training_loss}


def _child(role: str, base: Path) -> dict:
    """Run one side in a fresh process; its own peak RSS comes from wait4."""
    start = time.time()
    out = base.parent / f"{role}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen([sys.executable, __file__, "--role", role, "--base", str(base), "--out", str(out)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{role} failed:\n{process.stderr.read().decode()[-3000:]}")
    result = json.loads(out.read_text())
    result.update(wall_s=round(wall, 1), peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
                  tokens_per_s=round(result["tokens"] / result["train_s"], 1))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="llama")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    parser.add_argument("--role", choices=("tuneforge", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        result = (run_tuneforge if args.role == "tuneforge" else run_peer)(Path(args.base))
        Path(args.out).write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        results = {}
        for role in ("tuneforge", "peer"):
            base = _prepare(args, Path(tmp) / role)
            results[role] = _child(role, base)
    ours, peer = results["tuneforge"], results["peer"]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{'GPU' if _has_cuda() else 'CPU only'}; {time.strftime('%Y-%m-%d')}")
    print(f"model: tiny {args.family}, {'LoRA' if args.lora else 'full fine-tuning'}, {args.rows} rows x "
          f"{args.epochs} epochs, batch {args.batch}")
    print(f"{'':10} {'tokens/s':>10} {'train s':>8} {'wall s':>7} {'peak RSS MiB':>13} {'train loss':>11}")
    for role, r in results.items():
        print(f"{role:10} {r['tokens_per_s']:>10.1f} {r['train_s']:>8.2f} {r['wall_s']:>7.1f} {r['peak_rss_mib']:>13.1f} "
              f"{r['train_loss']:>11.4f}")
    print(f"ratio tuneforge/peer: tokens/s {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}, "
          f"peak RSS {ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f}, wall {ours['wall_s'] / peer['wall_s']:.2f}")
    return 0


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
