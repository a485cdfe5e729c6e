"""The recipes the job runtime runs, by job kind: the table handed to job/launcher.py.

The launcher (job/) knows no recipe: `tuneforge train`, sagemaker-training's `train`
(SAGEMAKER_TRAINING_MODULE=tuneforge.recipes:main), the launcher's isolated child (run) and each
torchrun rank (`python -m tuneforge.recipes`) hand it this table; a new recipe is one entry here.
After a failed job the launcher calls the table's hook: the run report, as far as the job got.
"""

from __future__ import annotations

import os
import sys

from .diffusion import job as text_to_image
from .job import launcher, worker
from .llm import job as language_model
from .report import write_job_report

# the first entry whose detect() holds; the last, the language-model recipe, is the default
RECIPES = launcher.Recipes(entries=(text_to_image.entry(), language_model.entry()), module="tuneforge.recipes",
                           after_failure=write_job_report)


def run(base_dir: str | os.PathLike | None = None, *, isolate: bool = False, fresh: bool = True) -> int:
    """One training job on the /opt/ml tree with these recipes (job/launcher.py's run)."""
    return launcher.run(base_dir, recipes=RECIPES, isolate=isolate, fresh=fresh)


def main() -> None:
    """sagemaker-training's SAGEMAKER_TRAINING_MODULE entry: raises on failure, never sys.exit."""
    launcher.main(RECIPES)


if __name__ == "__main__":  # one torchrun rank (job/launcher.py's torchrun_command)
    sys.exit(worker.main(RECIPES))
