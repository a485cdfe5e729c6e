"""TensorBoard event files, written with torch's SummaryWriter (the tensorboard package)."""

from __future__ import annotations

from pathlib import Path


class TensorBoardSink:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.where = f"TensorBoard ({folder})"
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # SageMaker uploads the folder while the job runs

    def finish(self, final: dict[str, float], step: int, files: list[Path], status: str) -> None:
        for name, value in final.items():
            self.writer.add_scalar(name, value, step)
        self.writer.close()
