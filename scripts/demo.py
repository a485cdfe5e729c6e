#!/usr/bin/env python3
"""The main job on the bundled tiny model and sample data: `make demo`.

Lays out an /opt/ml-shaped folder (tiny Llama in the `model` channel, sample instruction data in
`training` and `validation`, hyperparameters.json), runs `tuneforge train` on it exactly as the
training image would, then prints the metrics and the base vs fine-tuned answers.

The tiny base model has random weights, so it is fully fine-tuned (peft_type=none): LoRA steers
what a pretrained model already knows, and a random model knows nothing to steer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HYPERPARAMETERS = {
    "instruction_tuned": "True",
    "peft_type": "none",
    "epoch": "8",
    "learning_rate": "0.003",
    "per_device_train_batch_size": "16",
    "per_device_eval_batch_size": "16",
    "rouge_samples": "24",
    "max_output_length": "16",
}


def layout(base: Path, family: str) -> None:
    from tuneforge.samples import write_sample_data
    from tuneforge.tiny import tiny_model

    if base.exists():
        shutil.rmtree(base)
    data = base / "input" / "data"
    channels = write_sample_data("instruction", base / "staging")
    shutil.move(str(channels["train"]), data / "training")
    shutil.move(str(channels["validation"]), data / "validation")
    shutil.rmtree(base / "staging")
    shutil.copytree(tiny_model(family), data / "model")
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))


def show(base: Path) -> None:
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    print("\n=== metrics (output/data/metrics.json) ===")
    rows = [("validation loss", metrics.get("eval_loss_before"), metrics.get("eval_loss")),
            ("perplexity", metrics.get("perplexity_before"), metrics.get("perplexity"))]
    rows += [(key, metrics.get("rouge_before", {}).get(key), metrics.get(key)) for key in ("rouge1", "rouge2", "rougeL")]
    print(f"{'':18}{'base':>12}{'fine-tuned':>12}")
    for name, before, after in rows:
        print(f"{name:18}{before:>12.4f}{after:>12.4f}")
    print(f"train loss {metrics['train_loss']:.4f} over {metrics['steps']} steps in {metrics['train_runtime_s']} s "
          f"({metrics['train_tokens_per_second']} tokens/s)")
    print("\n=== base vs fine-tuned answers (output/data/samples.jsonl) ===")
    samples = [json.loads(line) for line in (base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    for sample in samples[:3]:
        question = sample["prompt"].split("### Instruction:\n")[-1].split("\n")[0]
        print(f"Q: {question}\n   expected:   {sample['reference']}\n   base:       {sample['before'][:70]!r}\n"
              f"   fine-tuned: {sample['after']!r}")
    print(f"\nmodel files in {base / 'model'}: {', '.join(sorted(p.name for p in (base / 'model').iterdir()))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "demo-run" / "opt" / "ml"), help="the /opt/ml tree to create")
    parser.add_argument("--family", default="llama")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    args = parser.parse_args()
    base = Path(args.output).resolve()
    if args.epochs:
        HYPERPARAMETERS["epoch"] = str(args.epochs)
    layout(base, args.family)
    print(f"job folder: {base}\nhyperparameters: {json.dumps(HYPERPARAMETERS)}", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    code = subprocess.call([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(base)], env=env)
    if code != 0:
        print(f"training failed ({code}): {(base / 'output' / 'failure').read_text()}", file=sys.stderr)
        return code
    show(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
