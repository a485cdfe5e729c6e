"""Which checkpoint a run resumes, and what it may load from it.

/opt/ml/checkpoints is restored from the job's checkpoint S3 prefix, so its files are input that
whoever can write that prefix controls (a digest kept beside them would be rewritten too).
- Code: a pickle can run anything when loaded. Every torch.load in the training process is forced
  to weights_only (TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 wins even over DeepSpeed's explicit
  weights_only=False), with the few plain classes DeepSpeed's own checkpoints hold allowed. The
  chosen checkpoint is also scanned first: a file holding anything else fails the job, naming the
  file and the objects, before anything is loaded. training_args.bin is never loaded on resume.
- Compatibility: each manifest records what its run was made with (the recipe's identity, e.g. llm/identity.py); a checkpoint
  from a run with other settings is moved to checkpoints/superseded-<time>/ (kept, not deleted)
  and this run starts fresh, with a warning naming the settings that differ.
- Completion: a checkpoint that already reached max_steps is restored and not trained further.
- State: a checkpoint whose trainer_state.json is missing, not JSON or of the wrong shape is
  named in a warning and skipped: the previous complete checkpoint is resumed, else none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import UserError
from . import distributed
from .checkpoints import common_latest_checkpoint, complete_checkpoints, read_manifest, step_of

log = logging.getLogger(__name__)

FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
NEVER_LOADED = {"training_args.bin"}  # written by the Trainer for people, not read on resume
PICKLED = (".pt", ".pth", ".bin", ".pkl")


class CheckpointError(UserError):
    """A checkpoint in /opt/ml/checkpoints holds something that must not be loaded."""


def _safe_classes() -> list:
    """Plain-data classes in the Trainer's and DeepSpeed's own checkpoints (found by saving real
    ZeRO-2/ZeRO-3 checkpoints and loading them with weights_only=True)."""
    import numpy as np
    from deepspeed.runtime.fp16 import loss_scaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    np_core = getattr(np, "_core", None) or np.core
    classes = [np_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)),  # RNG states
               ZeroStageEnum, fragment_address]
    classes += [getattr(loss_scaler, n) for n in ("LossScaler", "DynamicLossScaler") if hasattr(loss_scaler, n)]
    return classes


@contextlib.contextmanager
def weights_only_loads():
    """Every torch.load in this process loads tensors and plain data only, while the block runs
    (processes started meanwhile inherit it)."""
    import torch

    # both set is an error in torch; pop keeps each old value to put back
    saved = {k: os.environ.pop(k, None) for k in (FORCE, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ[FORCE] = "1"
    try:
        torch.serialization.add_safe_globals(_safe_classes())
    except ImportError:  # no DeepSpeed in this image: its classes cannot appear in a loadable checkpoint
        pass
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refused_objects(path: Path) -> list[str]:
    """The globals a weights-only load of `path` would refuse ([] when it loads)."""
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint

    with contextlib.suppress(Exception):
        return get_unsafe_globals_in_checkpoint(str(path))
    try:  # not a zip checkpoint: try the real thing (weights-only, so it runs nothing)
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        return [str(exc).strip().splitlines()[0]]
    except Exception:  # noqa: BLE001 - not a pickle problem; the load itself will report it
        return []
    return []


def check_loads_weights_only(folder: Path) -> None:
    """Fail before loading anything when a file of the checkpoint holds code or other objects."""
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix not in PICKLED or path.name in NEVER_LOADED or not path.is_file():
            continue
        refused = refused_objects(path)
        if refused:
            raise CheckpointError(
                f"checkpoint file {path} holds code or objects that are not allowed in a checkpoint "
                f"({', '.join(refused[:5])}); nothing was loaded from it",
                fix=f"delete {folder} (here and under the job's checkpoint S3 prefix) to start without it, and "
                    "check who can write that prefix: checkpoints may hold only tensors and plain data")


# ---------------------------------------------------------------- what a checkpoint was made with
def differences(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in new if k in old and old[k] != new[k]]


# ---------------------------------------------------------------- the plan
@dataclass
class ResumePlan:
    checkpoint: Path | None = None
    finished: bool = False  # the checkpoint already reached max_steps: restore it, do not train
    final_step: int | None = None
    superseded: dict = field(default_factory=dict)


def _trainer_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _callback_states(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, dict) or (isinstance(v, list) and all(isinstance(x, dict) for x in v)) for v in value.values())


STATE_FILE = "trainer_state.json"
# The TrainerState fields resume reads, with the JSON each must hold: the Trainer trusts every type.
STATE_TYPES = {
    "global_step": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "epoch": (_number, "a number"), "total_flos": (_number, "a number"), "best_metric": (_number, "a number"),
    "max_steps": (_whole, "a whole number"), "num_train_epochs": (_number, "a number"),
    "logging_steps": (_number, "a number"), "eval_steps": (_number, "a number"), "save_steps": (_number, "a number"),
    "train_batch_size": (_whole, "a whole number"), "num_input_tokens_seen": (_whole, "a whole number"),
    "best_global_step": (_whole, "a whole number"), "best_model_checkpoint": (lambda v: isinstance(v, str), "a string"),
    "log_history": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects"),
    "stateful_callbacks": (_callback_states, "an object of callback states"),
}
NULLABLE = {"epoch", "train_batch_size", "best_metric", "best_global_step", "best_model_checkpoint", "log_history",
            "stateful_callbacks"}
JSON_KINDS = {str: "a string", list: "a list", dict: "an object", bool: "true/false", int: "a number",
              float: "a number", type(None): "null"}


def state_problem(folder: Path) -> str | None:
    """Why the checkpoint's trainer_state.json cannot be resumed from, if it cannot. The Trainer
    loads it as TrainerState(**json) and trusts it: a tampered file failed deep inside train() with
    a bare AttributeError or TypeError, or resumed at a step the checkpoint never reached."""
    from transformers.trainer_callback import TrainerState

    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"there is no {STATE_FILE}"
    except UnicodeDecodeError:
        return f"{STATE_FILE} is not UTF-8 text"
    except ValueError as exc:
        return f"{STATE_FILE} is not JSON ({exc})"
    except OSError as exc:
        return f"{STATE_FILE} cannot be read ({exc.strerror})"
    if not isinstance(state, dict):
        return f"{STATE_FILE} holds {JSON_KINDS.get(type(state), 'a value')}, not an object"
    unknown = sorted(set(state) - {f.name for f in fields(TrainerState)})
    if unknown:
        return f"{STATE_FILE} has fields the Trainer does not know ({', '.join(unknown[:5])})"
    for name, (valid, expected) in STATE_TYPES.items():
        value = state.get(name)
        if (name in state or name == "global_step") and not (value is None and name in NULLABLE or valid(value)):
            return f"{STATE_FILE} field {name!r} holds {JSON_KINDS.get(type(value), 'a value')}, not {expected}"
    if state["global_step"] != step_of(folder):
        return f"{STATE_FILE} says global_step {state['global_step']}, not the folder's step {step_of(folder)}"
    return None


def _resumable(folder: Path, refused: list[Path]) -> bool:
    problem = state_problem(folder)
    if problem:
        refused.append(folder)
        log.warning("%s is not resumed from: %s (delete it here and under the job's checkpoint S3 prefix)",
                    folder, problem)
    return problem is None


def supersede(folder: Path, reasons: list[str]) -> Path:
    """Move every checkpoint of the earlier run aside (this node's local rank 0; others wait)."""
    target = folder / f"superseded-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    if distributed.local_rank() == 0:
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir()):
            if path.is_dir() and step_of(path) is not None:
                os.replace(path, target / path.name)
    distributed.barrier()
    log.warning("the checkpoints in %s were made with other settings (%s): this run starts fresh; they were moved "
                "to %s (delete them when no longer needed)", folder, "; ".join(reasons), target)
    return target


def plan_resume(recipe, identity: dict) -> ResumePlan:
    """Pick the checkpoint to resume (a collective: every rank calls it) and check it."""
    folder = recipe.paths.checkpoint_dir
    refused: list[Path] = []
    latest = common_latest_checkpoint(folder, usable=lambda path: _resumable(path, refused))
    if refused:
        log.warning("%d checkpoint(s) refused; %s", len(refused),
                    f"resuming from {latest}" if latest else "no other complete checkpoint: this run starts fresh")
    if latest is None:
        return ResumePlan()
    recorded = read_manifest(latest).get("identity")
    reasons = differences(recorded, identity) if recorded else []
    if reasons:
        moved = supersede(folder, reasons)
        return ResumePlan(superseded={"moved_to": str(moved), "differences": reasons})
    plan = ResumePlan(checkpoint=latest)
    max_steps = recipe.config.max_steps
    step = _trainer_state(latest).get("global_step", step_of(latest))
    if max_steps > 0 and step >= max_steps:
        plan.finished, plan.final_step = True, step
        best = _trainer_state(latest).get("best_model_checkpoint")
        if (recipe.args.load_best_model_at_end and best and Path(best) in complete_checkpoints(folder)
                and state_problem(Path(best)) is None):
            plan.checkpoint = Path(best)  # what the finished run would have ended with
        log.warning("%s already reached max_steps=%d: restoring %s and going straight to evaluation and saving "
                    "(raise max_steps to train further)", latest, max_steps, plan.checkpoint)
    check_loads_weights_only(plan.checkpoint)
    return plan
