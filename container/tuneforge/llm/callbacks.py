"""Trainer callbacks: progress and metric lines that people and SageMaker metric definitions read,
stopping on SIGTERM, failing on a non-finite loss, committing checkpoints atomically."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from ..logs import format_duration, format_eta
from ..job import stopping
from ..job.finite import NonFiniteError
from ..job.metric_lines import metric_fields
from ..job.checkpoints import commit, disk_full_error, relocate, rotate
from ..job.background_checkpoints import CheckpointWriter
from ..job.distributed import any_rank, barrier, dist_ready
from .metrics import perplexity, tracker_scalars

log = logging.getLogger(__name__)


class MetricLines(TrainerCallback):
    """One line per logging step and one per evaluation, from rank 0, each a sentence for people
    that ends in the `[metric] name=value` fields SageMaker metric definitions read:

        step 40/160 (25%) epoch 2.00 | loss 1.2107 | lr 2.27e-03 | 48,560 tokens/s | ETA 0:00:03 [metric] train_loss=...
        evaluation at step 40/160: loss 1.0612, perplexity 2.89 (0.02 s) [metric] eval_loss=... [metric] eval_perplexity=...

    The baseline evaluation before training and the final one after it are summed up without
    `[metric]` fields: the first is not a training-curve point, the second repeats the last
    evaluation (or the kept best checkpoint's), which the final_* lines report."""

    def __init__(self):
        self.started: float | None = None
        self.first_step = 0
        self.rate = TokenRate()
        self.training_over = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.monotonic(), state.global_step
        self.rate.start(state.num_input_tokens_seen)
        self.training_over = False

    def on_train_end(self, args, state, control, **kwargs):
        self.training_over = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            print(self.progress_line(state, logs), flush=True)
        if "eval_loss" in logs:
            print(self.evaluation_line(state, logs["eval_loss"], logs.get("eval_runtime")), flush=True)
        if "eval_before_loss" in logs:
            loss = logs["eval_before_loss"]
            print(f"baseline evaluation (before training): loss {loss:.4f}, perplexity {perplexity(loss):.4g}"
                  f"{_seconds(logs.get('eval_before_runtime'))}", flush=True)

    def progress_line(self, state, logs: dict) -> str:
        now, rate = time.monotonic(), self.rate.since_last(state.num_input_tokens_seen)
        step, total = state.global_step, state.max_steps
        done = step - self.first_step
        eta = (now - self.started) / done * (total - step) if self.started is not None and done > 0 else None
        share = f" ({step / total:.0%})" if total else ""
        parts = [f"step {step}/{total}{share} epoch {state.epoch or 0:.2f}", f"loss {logs['loss']:.4f}"]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.3g}")
        if rate:
            parts.append(f"{rate:,.0f} tokens/s")
        parts.append(f"ETA {format_eta(eta)}")
        fields = metric_fields("train_loss", logs["loss"], step=step, epoch=round(state.epoch or 0.0, 3))
        return " | ".join(parts) + " " + fields

    def evaluation_line(self, state, loss: float, runtime) -> str:
        summary = f"loss {loss:.4f}, perplexity {perplexity(loss):.4g}{_seconds(runtime)}"
        if self.training_over:
            return f"final evaluation (the model that is saved): {summary}"
        context = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 3)}
        fields = metric_fields("eval_loss", loss) + " " + metric_fields("eval_perplexity", perplexity(loss), **context)
        return f"evaluation at step {state.global_step}/{state.max_steps}: {summary} {fields}"


class TokenRate:
    """Tokens per second between consecutive logging steps (the Trainer's num_input_tokens_seen)."""

    def __init__(self):
        self.last: tuple[float, int] | None = None  # (time, tokens seen) at the previous logging step

    def start(self, tokens: int) -> None:
        self.last = (time.monotonic(), tokens)

    def since_last(self, tokens: int) -> float:
        now = time.monotonic()
        rate = (tokens - self.last[1]) / (now - self.last[0]) if self.last and now > self.last[0] else 0.0
        self.last = (now, tokens)
        return rate


class TrackerLogs(TrainerCallback):
    """Each logging step and evaluation to the job's trackers (TensorBoard, MLflow: tuneforge/trackers)
    as train/* and eval/* scalars, from rank 0. The evaluation after training is left out (and the
    Trainer's closing summary has no step values): the job's final metrics (final/*) are sent when it ends."""

    def __init__(self, trackers):
        self.trackers = trackers
        self.rate = TokenRate()
        self.training_over = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.rate.start(state.num_input_tokens_seen)
        self.training_over = False

    def on_train_end(self, args, state, control, **kwargs):
        self.training_over = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.trackers.active:
            return
        if self.training_over and "eval_loss" in logs:
            return
        rate = self.rate.since_last(state.num_input_tokens_seen) if "loss" in logs else None
        self.trackers.scalars(tracker_scalars(logs, rate), state.global_step)


def _seconds(runtime) -> str:
    return f" ({format_duration(runtime)})" if isinstance(runtime, (int, float)) else ""


class FailOnNonFinite(TrainerCallback):
    """Fail at the first logged NaN/inf training loss or gradient norm, naming the step. Every rank
    logs the same all-reduced values, so all ranks stop at the same step. Needs
    logging_nan_inf_filter=False, or the Trainer hides NaN losses behind the previous average."""

    def __init__(self, learning_rate: float | None = None):
        self.learning_rate = learning_rate

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = {k: logs[k] for k in ("loss", "grad_norm") if isinstance((logs or {}).get(k), (int, float))
               and not math.isfinite(logs[k])}
        if not bad:
            return
        what = "training loss" if "loss" in bad else "gradient norm"
        value = bad.get("loss", bad.get("grad_norm"))
        others = ", ".join(f"{k}={v}" for k, v in bad.items())
        lr = f" (now {self.learning_rate:g})" if self.learning_rate else ""
        raise NonFiniteError(
            f"{what} became {value} at step {state.global_step} ({others}); training stopped and no model was saved",
            fix=f"lower learning_rate{lr} or raise warmup, check the data for broken rows, train in fp32 or bf16 "
                "rather than fp16, and check that the base model's weights are finite")


class AlreadyTrained(Exception):
    """Raised by SkipTraining once the Trainer has restored a checkpoint: nothing is left to train."""


class SkipTraining(TrainerCallback):
    """The checkpoint being resumed already reached max_steps. The Trainer would still take one
    more step before checking max_steps, so stop it at on_train_begin: weights, optimizer and
    trainer state are restored by then (every engine), and the recipe goes on to evaluate and save."""

    def on_train_begin(self, args, state, control, **kwargs):
        raise AlreadyTrained(state.global_step)


class StopOnSignal(TrainerCallback):
    """At an optimizer step's end: if any rank got SIGTERM, all save this step and stop. Ranks agree
    every few steps and at each step that saves, evaluates or is the last (stopping.StopSchedule);
    the Trainer's DefaultFlowCallback has set those flags alike on every rank before this runs."""

    def __init__(self):
        self.stopped_at: int | None = None
        self.schedule = stopping.StopSchedule()

    def on_step_end(self, args, state, control, **kwargs):
        due_anyway = (control.should_save or control.should_evaluate or control.should_training_stop
                      or state.global_step >= state.max_steps)
        if self.schedule.stop(state.global_step, due_anyway=bool(due_anyway)):
            stopping.STATE.signal_name = stopping.STATE.signal_name or "SIGTERM"
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


class StopFinalEvaluation(TrainerCallback):
    """One process: a SIGTERM during the final evaluation ends it at the next batch, by `stop()`
    (which raises stopping.Stopped). Several ranks agree after the evaluation instead."""

    def __init__(self, stop):
        self.stop = stop

    def on_prediction_step(self, args, state, control, **kwargs):
        if stopping.requested() is not None and not dist_ready():
            self.stop()


class CommitCheckpoints(TrainerCallback):
    """After the Trainer saved into staging on every rank: manifest, rename, rotate. A checkpoint
    whose large files are still being written in the background (background_checkpoints.py) is
    committed at the first step end where every rank's writer has finished, or before the next
    checkpoint, the last step or a stop, whichever comes first."""

    def __init__(self, staging: Path, final_dir: Path, keep: int, identity: dict | None = None,
                 writer: CheckpointWriter | None = None):
        self.staging = Path(staging)
        self.final_dir = Path(final_dir)
        self.keep = keep
        self.identity = identity  # what the checkpoints are made with (resume.run_identity), in each manifest
        self.writer = writer or CheckpointWriter(enabled=False)
        self.committed: list[Path] = []
        self.pauses: list[float] = []  # seconds training waited for each checkpoint
        self.bytes_written = 0  # size of the last checkpoint
        self.pending: int | None = None  # the step of a checkpoint still being written in the background
        self.estimate = lambda: 0  # bytes a checkpoint takes before one was written (set by the Trainer)
        self._since = time.time()  # the last moment before the Trainer began writing

    @contextmanager
    def disk_full_named(self, step: int):
        """A full disk while checkpoint-`step` is written becomes a ResourceError naming the folder."""
        try:
            yield
        except Exception as exc:
            error = disk_full_error(exc, self.staging / f"checkpoint-{step}", self.final_dir,
                                    self.bytes_written or self.estimate(), self.keep)
            if error is None:
                raise
            raise error from exc

    # The Trainer logs, evaluates, then writes a checkpoint after a step: the write starts after
    # whichever of these came last.
    def on_step_end(self, args, state, control, **kwargs):
        if self.pending is not None:
            must = control.should_save or control.should_training_stop or state.global_step >= state.max_steps
            # the same on every rank, so every rank joins the collective below alike
            if must or not any_rank(not self.writer.done()):
                self.settle(args, state, kwargs.get("model"))
        self._since = time.time()

    def on_log(self, args, state, control, **kwargs):
        self._since = time.time()

    def on_evaluate(self, args, state, control, **kwargs):
        self._since = time.time()

    def on_train_end(self, args, state, control, **kwargs):
        self.settle(args, state, kwargs.get("model"))

    def summary(self) -> dict:
        """metrics.json `checkpoints`: how many were written and how long training waited for them."""
        summary = {"written": len(self.pauses), "pause_s_total": round(sum(self.pauses), 3),
                   "pause_s_max": round(max(self.pauses, default=0.0), 3),
                   "last_mib": round(self.bytes_written / 2**20, 1),
                   "written_in_background": len(self.writer.write_s)}
        if self.writer.write_s:
            summary["background_write_s_max"] = round(max(self.writer.write_s), 3)
        if not self.writer.enabled:
            summary["background_off"] = self.writer.why_not
        return summary

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written (or handed to its writer) its RNG state and shards
        state.best_model_checkpoint = relocate(state.best_model_checkpoint, self.staging, self.final_dir)
        if self.writer.last_deferred:
            self.pending = state.global_step
            self.pauses.append(time.time() - self._since)
            log.info("checkpoint-%d staged: training paused %.2f s; its files are being written in the background",
                     state.global_step, self.pauses[-1])
            return control
        with self.disk_full_named(state.global_step):
            final = self._commit(state.global_step, args, state, kwargs.get("model"))
        self.pauses.append(time.time() - self._since)
        if args.should_save:
            log.info("checkpoint %s written: training paused %.2f s for %.1f MiB", final, self.pauses[-1],
                     self.bytes_written / 2**20)
        return control

    def settle(self, args, state, model) -> None:
        """Wait for the pending checkpoint's files on every rank, then commit it."""
        if self.pending is None:
            return
        start = time.time()
        step = self.pending
        with self.disk_full_named(step):
            self.writer.wait(self.staging / f"checkpoint-{step}")
            barrier()
            self.pending = None
            final = self._commit(step, args, state, model)
        waited = time.time() - start
        self.pauses[-1] += waited
        if args.should_save:
            log.info("checkpoint %s written in the background in %.2f s (training waited %.2f s for it): %.1f MiB",
                     final, self.writer.write_s[-1] if self.writer.write_s else 0.0, waited, self.bytes_written / 2**20)

    def _commit(self, step: int, args, state, model) -> Path:
        staged = self.staging / f"checkpoint-{step}"
        final = self.final_dir / staged.name
        if args.should_save and staged.is_dir():
            if not state.is_world_process_zero and not (args.deepspeed or args.fsdp):
                save_weights_on_this_host(model, staged)
            trainer_state = staged / "trainer_state.json"
            if trainer_state.exists():
                data = json.loads(trainer_state.read_text())
                data["best_model_checkpoint"] = relocate(data.get("best_model_checkpoint"), self.staging, self.final_dir)
                trainer_state.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            commit(staged, self.final_dir, identity=self.identity)
            rotate(self.final_dir, self.keep, protect=state.best_model_checkpoint and Path(state.best_model_checkpoint))
            self.bytes_written = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        barrier()
        self.committed.append(final)
        return final


def save_weights_on_this_host(model, staged: Path) -> None:
    """transformers 5's save_pretrained writes weights on global rank 0 alone once torch.distributed
    is up, yet with several hosts each resumes from its own disk (save_on_each_node): a checkpoint
    on any other host would hold no weights and fail to load. DDP ranks hold whole, identical
    weights, so this host's writer saves them itself. DeepSpeed keeps its own per-host states
    (global_step*), and peft adapters are written on every host already. Not for FSDP: its
    weights are sharded, and gathering them is a collective the other hosts would not join."""
    from ..model_folder import holds_weights

    if model is None or holds_weights(staged):
        return
    # an instance attribute shadows the rank-0 check of this one call
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        model.save_pretrained(staged, safe_serialization=True)
    finally:
        del model.should_save_on_this_rank
