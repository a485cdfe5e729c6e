"""fid_score: the Frechet Inception Distance between the training images and pictures the model
draws, computed as pytorch-fid computes it (the FID Inception-v3's 2048 pool features, their mean
and covariance, and the Frechet distance of the two Gaussians).

The Inception weights are not in the image and never downloaded: with compute_fid=True the job
reads them from its `fid` channel, which holds pytorch-fid's weights file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ModelError

log = logging.getLogger(__name__)

FID_CHANNEL = "fid"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
GET_WEIGHTS = (f"download {WEIGHTS_URL} (pytorch-fid's FID Inception-v3, the one torchmetrics and torch-fidelity use) "
               f"and pass it as a channel named `{FID_CHANNEL}` (e.g. estimator.fit({{..., \"{FID_CHANNEL}\": "
               f"\"s3://bucket/fid/\"}})), or set compute_fid to False")
BATCH = 16


def weights_file(paths) -> Path:
    """The weights file in the `fid` channel; ModelError naming the channel and the file otherwise."""
    channel = paths.channel(FID_CHANNEL)
    found = sorted(channel.rglob(WEIGHTS_FILE), key=lambda p: len(p.parts)) if channel.is_dir() else []
    if found:
        return found[0]
    if not channel.is_dir():
        what = f"compute_fid=True needs the Inception-v3 weights file {WEIGHTS_FILE}, and the job has no `{FID_CHANNEL}` channel"
    else:
        others = sorted(p.name for p in channel.rglob("*") if p.is_file())[:5]
        what = (f"the `{FID_CHANNEL}` channel holds no {WEIGHTS_FILE}"
                + (f" (found: {', '.join(others)})" if others else " (it is empty)"))
    raise ModelError(what, where=str(channel), fix=GET_WEIGHTS)


def load_inception(path: Path, device: str = "cpu"):
    """The FID Inception network with the file's weights, loaded strictly; ModelError naming the file."""
    import torch

    from .inception import FIDInceptionV3

    network = FIDInceptionV3()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
        network.load_state_dict(_with_batch_counts(state, network), strict=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file gets the same answer
        reason = " ".join(str(exc).split())[:300]
        raise ModelError(f"{path.name} is not the FID Inception-v3 weights file ({type(exc).__name__}: {reason})",
                         where=str(path), fix=f"replace it with {WEIGHTS_FILE} unchanged: {GET_WEIGHTS}") from None
    return network.eval().requires_grad_(False).to(device)


def _with_batch_counts(state: dict, network) -> dict:
    """The state with BatchNorm's num_batches_tracked where a file saved before PyTorch 0.4.1 has
    none (BatchNorm fills them so itself for such files; unused in evaluation); all else as it is."""
    import torch

    missing = {key: torch.tensor(0) for key in network.state_dict()
               if key.endswith(".num_batches_tracked") and key not in state}
    return {**state, **missing} if missing else state


def features(network, images: list, device: str = "cpu") -> np.ndarray:
    """(N, 2048) float64 features of PIL images (each taken as RGB in [0, 1], as pytorch-fid does)."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            batch = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images[start:start + BATCH]]
            pixels = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device)
            rows.append(network(pixels).double().cpu().numpy())
    return np.concatenate(rows)


def statistics(feature_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (one row per image, as np.cov(rowvar=False))."""
    if len(feature_rows) < 2:
        raise ValueError("a covariance needs at least two images")
    return feature_rows.mean(axis=0), np.cov(feature_rows, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as pytorch-fid: a tiny ridge
    where the product has no finite square root (few images make singular covariances)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # rounding leaves tiny imaginary parts
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_score(real: np.ndarray, generated: np.ndarray) -> float:
    """FID of two feature sets (rows: images), equal to frechet_distance of their statistics.

    With fewer images than features (a DreamBooth job has a handful against 2048) the covariances
    are A^T A / (n - 1) of the centered rows A, and Tr sqrt(S1 S2) is Tr sqrt(M) of the small
    symmetric M = A1 S2 A1^T / (n1 - 1) (S1 S2 = X Y and Y X = M share their nonzero eigenvalues):
    the eigenvalues of an n1 x n1 matrix instead of the square root of a 2048 x 2048 one, which
    takes minutes on a CPU."""
    from scipy import linalg

    mu1, sigma1 = statistics(real)
    mu2, sigma2 = statistics(generated)
    if len(real) >= real.shape[1]:
        return max(0.0, frechet_distance(mu1, sigma1, mu2, sigma2))
    centered = real - mu1
    small = centered @ sigma2 @ centered.T / (len(real) - 1)
    # M is symmetric positive semi-definite: the trace of its root is the sum of its eigenvalues' roots
    trace_root = float(np.sqrt(np.clip(linalg.eigvalsh((small + small.T) / 2), 0.0, None)).sum())
    diff = mu1 - mu2
    return max(0.0, float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root))


class FidMeter:
    """fid_score for the job: the training images' features once, each set of drawn pictures against them."""

    def __init__(self, network, device: str):
        self.network, self.device = network, device
        self.real: np.ndarray | None = None

    @classmethod
    def for_job(cls, paths, device: str) -> FidMeter:
        path = weights_file(paths)
        meter = cls(load_inception(path, device), device)
        log.info("fid_score: FID Inception-v3 weights from %s", path)
        return meter

    def set_real(self, images: list, resolution: int) -> None:
        """The training images as the model learns them: square, at the training resolution."""
        from PIL import Image, ImageOps

        if len(images) < 2:
            from ..errors import DataError

            raise DataError(f"fid_score needs at least 2 training images, the channel has {len(images)}",
                            fix="add more pictures of the subject, or set compute_fid to False")
        square = [ImageOps.fit(image, (resolution, resolution), method=Image.BICUBIC) for image in images]
        self.real = features(self.network, square, self.device)

    def score(self, images: list) -> float:
        return fid_score(self.real, features(self.network, images, self.device))
