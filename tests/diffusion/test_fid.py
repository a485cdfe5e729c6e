"""fid_score: the FID Inception network loads pytorch-fid's weights file strictly, a wrong file or a
missing `fid` channel fails with the file's name and the fix, and the Frechet distance matches a
hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.diffusion.conftest import FAST, dreambooth_job
from tuneforge.diffusion.fid import (FID_CHANNEL, WEIGHTS_FILE, features, fid_score, frechet_distance, load_inception,
                                     statistics)
from tuneforge.errors import ModelError


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory):
    """A weights file of the real layout (pytorch-fid's names and shapes) with random values."""
    from tuneforge.diffusion.inception import FIDInceptionV3

    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():  # scaled so the features neither vanish nor explode over 94 layers
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("fid") / WEIGHTS_FILE
    torch.save(network.state_dict(), path)
    return path


def test_the_standard_layout_loads_strictly_and_gives_2048_features(fid_weights):
    from PIL import Image

    state = torch.load(fid_weights, weights_only=True)
    # the layout of pytorch-fid's file: torchvision's Inception3 names, 1008 classes, no aux head
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048) and not any(k.startswith("AuxLogits") for k in state)
    network = load_inception(fid_weights)
    assert torch.equal(network.state_dict()["Mixed_6e.branch7x7dbl_5.bn.running_var"],
                       state["Mixed_6e.branch7x7dbl_5.bn.running_var"])
    images = [Image.new("RGB", (64, 64), (i * 40, 20, 200)) for i in range(3)]
    rows = features(network, images)
    assert rows.shape == (3, 2048) and np.isfinite(rows).all()


def test_a_file_without_batch_counts_loads(tmp_path, fid_weights):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked; everything else must match."""
    state = {k: v for k, v in torch.load(fid_weights, weights_only=True).items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / WEIGHTS_FILE)
    network = load_inception(tmp_path / WEIGHTS_FILE)
    assert torch.equal(network.state_dict()["Mixed_7c.branch1x1.conv.weight"], state["Mixed_7c.branch1x1.conv.weight"])


def test_a_wrong_weights_file_names_the_file_and_the_fix(tmp_path, fid_weights):
    state = torch.load(fid_weights, weights_only=True)
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the FID graph's
    del state["Mixed_5b.branch1x1.bn.running_mean"]
    wrong = tmp_path / WEIGHTS_FILE
    torch.save(state, wrong)
    with pytest.raises(ModelError) as caught:
        load_inception(wrong)
    message = caught.value.render()
    assert f"{WEIGHTS_FILE} is not the FID Inception-v3 weights file" in message and str(wrong) in message
    assert "Mixed_5b.branch1x1.bn.running_mean" in message and "fc.weight" in message
    assert f"replace it with {WEIGHTS_FILE} unchanged" in message and "pytorch-fid/releases" in message
    (tmp_path / "text" / WEIGHTS_FILE).parent.mkdir()
    (tmp_path / "text" / WEIGHTS_FILE).write_text("not a checkpoint")
    with pytest.raises(ModelError, match="is not the FID Inception-v3 weights file"):
        load_inception(tmp_path / "text" / WEIGHTS_FILE)


def test_identical_feature_sets_are_at_distance_zero():
    rows = np.random.default_rng(0).normal(size=(40, 6))
    assert abs(fid_score(rows, rows.copy())) < 1e-6
    few = np.random.default_rng(1).normal(size=(5, 2048))  # fewer images than features, as in a job
    assert abs(fid_score(few, few.copy())) < 1e-6


def test_the_few_images_shortcut_equals_the_full_square_root():
    """fid_score's n x n eigenvalue form gives what pytorch-fid's sqrtm of the d x d product gives."""
    rng = np.random.default_rng(2)
    real, drawn = rng.normal(size=(7, 48)), rng.normal(size=(4, 48)) * 1.5 + 0.3
    assert fid_score(real, drawn) == pytest.approx(frechet_distance(*statistics(real), *statistics(drawn)), rel=1e-5)
    assert fid_score(real, drawn) > 50  # far apart: not a formula that always answers 0


def test_frechet_distance_matches_a_hand_computation():
    # diagonal Gaussians: ||mu1-mu2||^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) = sum (sqrt s1 - sqrt s2)^2 + ...
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
    s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    expected = (3 ** 2 + 2 ** 2) + (2 - 1) ** 2 + (1 - 3) ** 2  # 13 + 1 + 4
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)
    # a rotated covariance: the same distance as its diagonal form (the trace terms do not depend on the basis)
    rotation = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    assert frechet_distance(rotation @ mu1, rotation @ s1 @ rotation.T, rotation @ mu2,
                            rotation @ s2 @ rotation.T) == pytest.approx(expected, abs=1e-9)
    # from samples: statistics() is the sample mean and the unbiased covariance
    rows = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mean, covariance = statistics(rows)
    assert mean.tolist() == [3.0, 4.0] and covariance.tolist() == [[4.0, 2.0], [2.0, 4.0]]


def test_compute_fid_without_the_channel_fails_at_once_naming_it(job, sd_base):
    dreambooth_job(job, sd_base, {**FAST, "max_steps": "2", "compute_fid": "True"})
    assert job.run_in_process() != 0
    first = job.failure_first_line()
    assert f"needs the Inception-v3 weights file {WEIGHTS_FILE}" in first and f"no `{FID_CHANNEL}` channel" in first
    assert "pytorch-fid/releases/download" in job.failure.read_text() and "compute_fid to False" in job.failure.read_text()
    assert not (job.base / "output" / "data" / "images").exists()  # nothing was drawn or trained
    job.channel(FID_CHANNEL).mkdir(parents=True, exist_ok=True)
    (job.channel(FID_CHANNEL) / "inception.pth").write_bytes(b"x")
    job.failure.unlink()
    assert job.run_in_process() != 0
    assert f"the `{FID_CHANNEL}` channel holds no {WEIGHTS_FILE} (found: inception.pth)" in job.failure_first_line()


@pytest.mark.slow
def test_a_job_with_the_fid_channel_reports_fid_score(job, sd_base, fid_weights, capfd):
    import shutil

    dreambooth_job(job, sd_base, {**FAST, "max_steps": "6", "compute_fid": "True", "fid_images": "3"})
    shutil.copy(fid_weights, job.channel(FID_CHANNEL))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    log = "".join(capfd.readouterr())
    metrics = job.metrics()
    for key in ("fid_score_before", "fid_score"):
        assert metrics[key] > 0 and np.isfinite(metrics[key]), metrics
        assert f"[metric] {key}={metrics[key]:.6f}" in log
    assert metrics["fid_images"] == 3 and metrics["phases"]["fid_score"] < 120
    assert metrics["fid_score"] != metrics["fid_score_before"]  # the fine-tuned model draws other pictures
    page = (job.base / "output" / "data" / "report.html").read_text()
    assert f'data-key="fid_score" data-value="{metrics["fid_score"]!r}"' in page
    assert f'data-key="fid_score_before" data-value="{metrics["fid_score_before"]!r}"' in page
    assert "fid_score against the training images" in (job.base / "output" / "data" / "report.md").read_text()
