"""Dynamic batching and generation: many callers, one `model.generate` at a time.

Request threads `submit` a GenerationRequest and get a Job back. One scheduler thread per
worker takes the oldest waiting job, lets it wait up to max_batch_wait_ms for company with
the same sampling settings, and runs them as one left-padded generate call. Per-sequence work
(stop sequences, per-request max_new_tokens, deadlines, streaming, logprobs) happens in a
StoppingCriteria that sees every new token, so a short answer leaves the batch early without
waiting for its neighbours (its caller gets it at once), and its tokens reach a streaming client
as they are made.

Long generations do not starve short requests: a generate call that has run batch_slice_s while
other requests wait stops, and its unfinished sequences go back to the end of the queue with
what they generated so far (their next call reads it as prompt). Seeded sampling (its random
stream must not depend on load) and seq2seq models are not cut.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field

from . import admission
from .errors import DEADLINE_PASSED, DeadlineExceeded, GenerationFailed, Overloaded
from .metrics import ServeMetrics

__all__ = ["DeadlineExceeded", "Engine", "GenerationFailed", "GenerationRequest", "Overloaded", "Sampling"]

log = logging.getLogger(__name__)
SCORE_CHUNK = 512  # prompt positions turned into float32 log-probabilities at a time
CUT_COST = 4  # a cut generate call has decoded at least this many times its prefill time


@dataclass(frozen=True)
class Sampling:
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None

    def batch_key(self, job_id: int) -> tuple:
        """Jobs share a generate call only when this key matches.

        Seeded sampling runs alone: its random stream must not depend on its neighbours, or the
        same seed would give different text under different load.
        """
        if not self.do_sample:
            return (False, self.repetition_penalty, self.no_repeat_ngram_size)
        alone = job_id if self.seed is not None else None
        return (True, self.temperature, self.top_p, self.top_k, self.repetition_penalty,
                self.no_repeat_ngram_size, alone)


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    deadline: float | None = None  # time.monotonic() value; non-streaming requests only
    top_logprobs: int = 0  # alternatives recorded for each generated token
    prompt_logprobs: int | None = None  # score the prompt tokens too, with this many alternatives
    guide: object | None = None  # a guided.Plan: the output must match its pattern
    adapter: str | None = None  # one of the model folder's adapters/ (None: the weights alone)


@dataclass
class Token:
    id: int
    text: str
    logprob: float | None  # None for a prompt's first token (nothing comes before it)
    special: bool
    top: list[tuple[int, str, float]] | None = None  # most likely alternatives: (id, text, logprob)


@dataclass
class Sequence:
    index: int
    text: str
    tokens: list[Token]
    finish_reason: str  # "length" | "eos_token" | "stop_sequence"


@dataclass
class Result:
    sequences: list[Sequence]
    prompt_tokens: int
    seed: int | None
    queue_time: float
    inference_time: float
    prompt_scores: list[Token] | None = None  # the prompt's tokens with their log-probabilities

    @property
    def generated_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.sequences)


@dataclass
class StreamEvent:
    """One new token of sequence `index`; `text` is what may be shown now (held back while it
    could still become a stop sequence). `sequence` is set on the sequence's last event."""

    index: int
    token: Token
    text: str
    sequence: Sequence | None = None


class Job:
    _ids = iter(range(1, 1 << 62))

    def __init__(self, request: GenerationRequest):
        self.id = next(Job._ids)
        self.request = request
        self.key = (request.adapter, *request.sampling.batch_key(self.id))  # a batch runs one adapter
        self.created = time.monotonic()
        self.started: float | None = None
        self.events: queue.Queue | None = queue.Queue() if request.stream else None
        self.done = threading.Event()
        self.result: Result | None = None
        self.error: Exception | None = None
        self.cancelled = False
        self.seed: int | None = None  # set when its batch starts, before the first token
        self.sequences: list[_Row] | None = None  # made by its first generate call, kept across slices
        self.prompt_scores: list[Token] | None = None
        self.inference_time = 0.0  # seconds in generate calls, summed over its slices

    def rows(self) -> int:
        return self.request.n

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the result is in; raises the job's error."""
        if not self.done.wait(timeout):
            self.cancelled = True
            raise DeadlineExceeded(DEADLINE_PASSED)
        if self.error is not None:
            raise self.error
        return self.result

    def stream(self):
        """Yield StreamEvents, then the Result; raises the job's error where it happens."""
        try:
            while True:
                item = self.events.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Result):
                    return
        finally:
            self.cancelled = True  # the client left early: stop spending compute on it

    def _finish(self, result: Result | None = None, error: Exception | None = None) -> None:
        if self.done.is_set():
            return
        self.result, self.error = result, error
        if self.events is not None:
            self.events.put(error if error is not None else result)
        self.done.set()


class Engine:
    def __init__(self, loaded, settings, metrics: ServeMetrics | None = None):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.max_batch_size = settings.max_batch_size
        self.max_batch_tokens = settings.max_batch_tokens
        self.max_wait = settings.max_batch_wait_ms / 1000.0
        self.max_queue = settings.max_queue
        self.slice_s = settings.batch_slice_s
        self.deadline_s = settings.request_deadline
        self.metrics = metrics or ServeMetrics()
        self._waiting: list[Job] = []  # new jobs and the unfinished ones of a cut generate call
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="tuneforge-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers
    def submit(self, request: GenerationRequest) -> Job:
        job = Job(request)
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"the server queue is full ({self.max_queue} requests waiting); retry later")
            unstarted = [waiting.created for waiting in self._waiting if waiting.started is None]
            admission.admit(request, job.created - min(unstarted) if unstarted else None, self.deadline_s)
            self._waiting.append(job)
            self._cond.notify()
        self.metrics.input_tokens.inc(len(request.prompt_ids))
        self.metrics.queue_depth.refresh()
        return job

    def withdraw(self, jobs) -> None:
        """Cancel jobs whose caller gave up (deadline, error); waiting ones leave the queue at
        once, so a request that was already answered 503 does not hold a slot (429 for others)."""
        with self._cond:
            for job in jobs:
                job.cancelled = True
                if job in self._waiting:
                    self._waiting.remove(job)
        self.metrics.queue_depth.refresh()

    def queue_depth(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ scheduler
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except Exception as exc:  # never let one bad batch kill the scheduler
                log.exception("generation failed for a batch of %d requests", len(batch))
                failure = GenerationFailed(f"generation failed: {type(exc).__name__}: {str(exc)[:200]}")
                for job in batch:
                    job._finish(error=failure)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._waiting:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._waiting[0]
            # Only the oldest request's wait is bounded; a backlog that built up during the
            # previous generate call goes out at once.
            until = first.created + self.max_wait
            while True:
                batch = self._compatible(first)
                rows = sum(job.rows() for job in batch)
                now = time.monotonic()
                if rows >= self.max_batch_size or now >= until or self.max_batch_size == 1:
                    break
                self._cond.wait(until - now)
            for job in batch:
                self._waiting.remove(job)
        self.metrics.queue_depth.refresh()
        return batch

    def _compatible(self, first: Job) -> list[Job]:
        batch, rows, longest, most_new = [], 0, 0, 0
        for job in self._waiting:
            if job.key != first.key:
                continue
            request = job.request
            new_rows = rows + job.rows()
            new_longest = max(longest, len(request.prompt_ids))
            new_most = max(most_new, request.max_new_tokens)
            if batch and (new_rows > self.max_batch_size
                          or new_rows * (new_longest + new_most) > self.max_batch_tokens):
                break
            batch.append(job)
            rows, longest, most_new = new_rows, new_longest, new_most
        return batch

    # ------------------------------------------------------------------ generation
    def _run_batch(self, jobs: list[Job]) -> None:
        live = self._admit(jobs)
        if not live:
            return
        started = time.monotonic()
        with _adapter_active(self.model, self.loaded.info.adapters, live[0].request.adapter):
            for job in live:
                if job.sequences is None:  # its first call
                    if job.request.prompt_logprobs is not None:
                        job.prompt_scores = self._score_prompt(job)
                    job.sequences = [_Row(job, i, self.tokenizer, self.loaded) for i in range(job.rows())
                                     if job.request.max_new_tokens > 0]
            rows = [row for job in live for row in job.sequences if not row.finished]
            self._seed(live)
            cut = _Slice(started, self.slice_s, self._waiting) if self._may_cut(live) else None
            if rows:
                self._generate(rows, live[0].request.sampling, cut, started)
        self.metrics.batch_duration.observe(time.monotonic() - started)
        for job in live:
            if job.done.is_set():
                continue
            if any(not row.finished for row in job.sequences):
                self._requeue(job, started)
            else:
                self._complete(job, started)

    def _may_cut(self, live: list[Job]) -> bool:
        sampling = live[0].request.sampling
        return self.slice_s > 0 and not self.loaded.seq2seq and not (sampling.do_sample and sampling.seed is not None)

    def _requeue(self, job: Job, started: float) -> None:
        """A job of a cut generate call: back to the end of the queue, its sequences kept."""
        job.inference_time += time.monotonic() - started
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()
        self.metrics.queue_depth.refresh()

    def _complete(self, job: Job, started: float) -> None:
        """Answer a job whose sequences all ended (called as soon as they do, mid-batch too)."""
        job.inference_time += time.monotonic() - started
        own = job.sequences
        if job.request.deadline is not None and any(r.finish_reason == "deadline" for r in own):
            job._finish(error=DeadlineExceeded(DEADLINE_PASSED))
            return
        # max_new_tokens 0 (an echoed prompt scored, nothing generated): empty sequences
        sequences = [row.sequence() for row in own] or [Sequence(i, "", [], "length") for i in range(job.rows())]
        result = Result(sequences=sequences, prompt_tokens=len(job.request.prompt_ids), seed=job.seed,
                        queue_time=job.started - job.created, inference_time=job.inference_time,
                        prompt_scores=job.prompt_scores)
        self.metrics.generated_tokens.inc(result.generated_tokens)
        job._finish(result)

    def _admit(self, jobs: list[Job]) -> list[Job]:
        """The jobs still wanted: neither cancelled nor past their deadline."""
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.started is None:
                job.started = now
                self.metrics.queue_time.observe(now - job.created)
            if job.cancelled:
                job._finish(error=DeadlineExceeded("the client went away"))
            elif job.request.deadline is not None and now >= job.request.deadline:
                job._finish(error=DeadlineExceeded(DEADLINE_PASSED if job.sequences is not None else (
                    "the request waited in the queue past the server deadline (TUNEFORGE_REQUEST_DEADLINE); raise "
                    "it, add workers or instances, or stream the answer (streams have no deadline)")))
            else:
                live.append(job)
        return live

    def _seed(self, live: list[Job]) -> int | None:
        import torch

        sampling = live[0].request.sampling
        seed = None
        if sampling.do_sample:
            seed = sampling.seed if sampling.seed is not None else random.randrange(1 << 63)
            torch.manual_seed(seed)
        for job in live:
            if job.seed is None:  # a job cut before keeps the seed it reported
                job.seed = seed
        return seed

    def _generate(self, rows: list["_Row"], sampling: Sampling, cut: "_Slice | None", started: float) -> None:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        from .guided import GuidedLogits

        # a sequence cut before goes on from what it made: prompt + its tokens so far
        input_ids, attention_mask = self._pad([row.job.request.prompt_ids + row.ids for row in rows])
        recorder = _LogprobRecorder()
        tracker = _RowTracker(rows, recorder, self.tokenizer, cut, lambda job: self._complete(job, started))
        guided = [GuidedLogits(rows)] if any(row.guide is not None for row in rows) else []
        processors = LogitsProcessorList(guided + _warpers(sampling) + [recorder])
        loaded = self.loaded
        config = GenerationConfig(
            max_new_tokens=max(row.max_new_tokens - len(row.ids) for row in rows), do_sample=sampling.do_sample,
            num_beams=1, temperature=None, top_k=None, top_p=None,
            pad_token_id=loaded.pad_token_id, eos_token_id=loaded.eos_token_ids or None,
            bos_token_id=loaded.model.generation_config.bos_token_id,
            decoder_start_token_id=loaded.model.generation_config.decoder_start_token_id)
        self.metrics.batch_size.observe(len(rows))
        with torch.inference_mode():
            self.model.generate(input_ids=input_ids.to(loaded.device),
                                attention_mask=attention_mask.to(loaded.device),
                                generation_config=config, logits_processor=processors,
                                stopping_criteria=StoppingCriteriaList([tracker]))
        if cut is None or not cut.taken:
            for row in rows:
                if not row.finished:  # generate ended without our tracker seeing the last token
                    row.finish("length")

    def _score_prompt(self, job: Job) -> list[Token]:
        """Each prompt token's log-probability given the tokens before it (the prompt alone, no
        padding: the numbers equal a direct forward pass of the model over the same ids)."""
        import torch

        ids = job.request.prompt_ids
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.loaded.device)).logits[0, :-1]
        special = self.loaded.special_ids
        tokens = [Token(ids[0], self.tokenizer.decode([ids[0]]), None, ids[0] in special, [])]
        for start in range(0, len(ids) - 1, SCORE_CHUNK):  # bounded float32 copies of the logits
            logprobs = torch.log_softmax(logits[start:start + SCORE_CHUNK].float(), dim=-1)
            chosen = torch.tensor(ids[start + 1:start + 1 + len(logprobs)], device=logprobs.device)
            values = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
            tops = _top_tokens(logprobs, job.request.prompt_logprobs, self.tokenizer)
            for token_id, value, top in zip(chosen.tolist(), values, tops):
                tokens.append(Token(token_id, self.tokenizer.decode([token_id]), value, token_id in special, top))
        return tokens

    def _pad(self, prompts: list[list[int]]):
        """Left padding for causal models (new tokens line up at the right); right for seq2seq."""
        import torch

        width = max(len(p) for p in prompts)
        pad = self.loaded.pad_token_id
        ids, mask = [], []
        for prompt in prompts:
            fill = width - len(prompt)
            if self.loaded.seq2seq:
                ids.append(prompt + [pad] * fill)
                mask.append([1] * len(prompt) + [0] * fill)
            else:
                ids.append([pad] * fill + prompt)
                mask.append([0] * fill + [1] * len(prompt))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _adapter_active(model, adapters: dict, name: str | None):
    """The named adapter of a model serving several (a peft model), or none of them for name None."""
    from contextlib import nullcontext

    if not adapters:  # weights alone (an adapter-only folder was merged into its base at load)
        return nullcontext()
    if name is None:
        return model.disable_adapter()
    model.set_adapter(name)
    return nullcontext()


def _warpers(sampling: Sampling) -> list:
    """Our own processors, in HF's order, so the recorder after them sees the final distribution."""
    from transformers import (NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    out = []
    if sampling.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.no_repeat_ngram_size:
        out.append(NoRepeatNGramLogitsProcessor(sampling.no_repeat_ngram_size))
    if sampling.do_sample:
        if sampling.temperature != 1.0:
            out.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            out.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            out.append(TopPLogitsWarper(sampling.top_p))
    return out


class _LogprobRecorder:
    """Last in the processor list: keeps this step's log-probabilities for the chosen tokens."""

    def __init__(self):
        self.last = None

    def __call__(self, input_ids, scores):
        import torch

        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


def _top_tokens(logprobs, k: int, tokenizer) -> list[list[tuple[int, str, float]]]:
    """The k most likely tokens of each row of `logprobs`: [(id, text, logprob), ...] per row."""
    if k <= 0:
        return [[] for _ in range(len(logprobs))]
    values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return [[(i, tokenizer.decode([i]), v) for i, v in zip(row_ids, row_values)]
            for row_ids, row_values in zip(indices.tolist(), values.tolist())]


class _RowTracker:
    """A StoppingCriteria that does each sequence's bookkeeping after every step."""

    def __init__(self, rows: list["_Row"], recorder: _LogprobRecorder, tokenizer, cut: "_Slice | None",
                 on_job_done):
        self.rows, self.recorder, self.tokenizer = rows, recorder, tokenizer
        self.top = max(row.job.request.top_logprobs for row in rows)
        self.cut, self.on_job_done = cut, on_job_done

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, -1]
        logprobs = self.recorder.last.gather(1, new[:, None]).squeeze(1).tolist()
        tops = _top_tokens(self.recorder.last, self.top, self.tokenizer)
        now = time.monotonic()
        done = []
        for row, token_id, logprob, top in zip(self.rows, new.tolist(), logprobs, tops):
            if not row.finished:
                deadline = row.job.request.deadline
                if row.job.cancelled:
                    row.finish("cancelled")
                elif deadline is not None and now >= deadline:
                    row.finish("deadline")
                else:
                    row.add(token_id, logprob, top[:row.job.request.top_logprobs])
                if row.finished and all(other.finished for other in row.job.sequences):
                    self.on_job_done(row.job)  # its caller need not wait for the rest of the batch
            done.append(row.finished)
        if self.cut is not None and not all(done) and self.cut.due(now):
            done = [True] * len(done)  # the unfinished rows go on in a later call
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Slice:
    """When a generate call yields: it has decoded `seconds` (and CUT_COST times as long as its
    prefill took, so re-reading the prompts when it goes on costs at most 1/CUT_COST more) and
    someone is waiting."""

    def __init__(self, started: float, seconds: float, waiting: list):
        self.started, self.seconds, self.waiting = started, seconds, waiting
        self.decoding: float | None = None  # when the first new token came
        self.taken = False

    def due(self, now: float) -> bool:
        if self.decoding is None:
            self.decoding = now
            self.seconds = max(self.seconds, CUT_COST * (now - self.started))
        if now - self.decoding >= self.seconds and self.waiting:
            self.taken = True
        return self.taken


class _Row:
    """One generated sequence: incremental detokenization, stop sequences, stream hold-back."""

    def __init__(self, job: Job, index: int, tokenizer, loaded):
        self.job, self.index, self.tokenizer = job, index, tokenizer
        self.max_new_tokens = job.request.max_new_tokens
        self.stop = job.request.stop
        self.eos = set(loaded.eos_token_ids)
        self.special = loaded.special_ids
        self.ids: list[int] = []
        self.tokens: list[Token] = []
        self.text = ""
        self.released = 0  # characters of text already sent to a streaming client
        self.prefix_offset = self.read_offset = 0
        self.finish_reason: str | None = None
        self.plan = job.request.guide
        self.guide = None
        if self.plan is not None:
            from outlines_core import Guide

            self.guide = Guide(self.plan.index)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token_id: int, logprob: float, top: list | None = None) -> None:
        self.ids.append(token_id)
        if self.guide is not None and token_id not in self.eos:
            self.guide.advance(token_id, return_tokens=False)
        delta = self._decode_delta()
        token = Token(token_id, delta, logprob, token_id in self.special, top)
        self.tokens.append(token)
        before = len(self.text)
        self.text += delta
        if token_id in self.eos:
            self.finish_reason = "eos_token"
        elif self.stop and self._cut_at_stop(before):
            self.finish_reason = "stop_sequence"
        elif len(self.ids) >= self.max_new_tokens:
            self.finish_reason = "length"
        if self.job.events is not None:
            shown = len(self.text) if self.finished else self._safe_length()
            event = StreamEvent(self.index, token, self.text[self.released:shown],
                                self.sequence() if self.finished else None)
            self.released = max(self.released, shown)
            self.job.events.put(event)

    def finish(self, reason: str) -> None:
        self.finish_reason = reason

    def sequence(self) -> Sequence:
        return Sequence(self.index, self.text, list(self.tokens), self.finish_reason or "length")

    def _decode_delta(self) -> str:
        """Text added by the newest token, decoding a short window (as TGI and vLLM do) so a
        step costs the same at token 10 and token 4000, and half a UTF-8 character waits."""
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = decode(self.ids[self.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix):]
        return ""

    def _cut_at_stop(self, before: int) -> bool:
        start = max(0, before - max(len(s) for s in self.stop) + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[:min(hits)]
        return True

    def _safe_length(self) -> int:
        """Length of text that cannot turn into a stop sequence with more tokens."""
        text = self.text
        for size in range(min(len(text), max((len(s) for s in self.stop), default=0)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) and s != tail for s in self.stop):
                return len(text) - size
        return len(text)
