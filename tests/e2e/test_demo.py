"""`make demo`'s script: lays out /opt/ml, trains, prints metrics and base vs fine-tuned answers."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_prints_metrics_and_answers(tmp_path):
    base = tmp_path / "opt" / "ml"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--output", str(base), "--model", "tiny",
                             "--epochs", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "=== metrics" in out and "validation loss" in out and "rougeL" in out
    assert "=== base vs fine-tuned answers" in out and out.count("fine-tuned: ") == 4
    assert (base / "model" / "model.safetensors").exists() and (base / "output" / "data" / "metrics.json").exists()
