"""`make images`: build both images with buildah/podman and smoke-run them (marker `images`).

Run with `pytest -m images tests/images`. Needs root, buildah (or podman) and debootstrap, and
registry access for pip and apt inside the build. From a clean cache about 12 minutes on
2 cores; with the cache in .cache/images (or $TUNEFORGE_IMAGES_DIR) about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.images
@pytest.mark.slow
def test_build_images_builds_and_smoke_runs_both():
    assert os.geteuid() == 0, "building images needs root (debootstrap, chroot isolation)"
    assert shutil.which("buildah") or shutil.which("podman"), "apt-get install buildah debootstrap"
    result = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], cwd=REPO,
                            capture_output=True, text=True, timeout=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # the images' own config, checked by the script against the contract
    assert "image config ok: entrypoint ['/usr/local/bin/tuneforge-entrypoint'] cmd ['train'] linux/amd64" in output
    assert "image config ok: entrypoint ['/usr/local/bin/tuneforge-entrypoint'] cmd ['serve'] linux/amd64" in output
    # train wrote a model inside the train image ...
    model_line = re.search(r"smoke: train ok in \d+s; model/ holds: (.*)", output)
    assert model_line and {"config.json", "model.safetensors", "tokenizer.json"} <= set(model_line.group(1).split())
    # ... and the serve image served it
    assert re.search(r"GET /ping -> 200", output)
    assert re.search(r'POST /invocations -> 200 \[\{"generated_text": ', output)
    assert "smoke: serve ok" in output
