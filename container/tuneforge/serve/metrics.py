"""Prometheus text-format metrics for GET /metrics, without a client library.

Each gunicorn worker keeps its own numbers (there is no shared memory between them); with
more than one worker a scrape sees the worker that answered it, labelled by `pid`.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(pairs: tuple) -> str:
    if not pairs:
        return ""
    escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for k, v in pairs)
    return "{" + ",".join(escaped) + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help_text):
        super().__init__(name, help_text)
        self._values: dict[tuple, float] = {}

    def inc(self, amount: float = 1, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """A value read at scrape time from a callable (queue depth, model readiness)."""

    kind = "gauge"

    def __init__(self, name, help_text, read):
        super().__init__(name, help_text)
        self._read = read

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_num(self._read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help_text, buckets):
        super().__init__(name, help_text)
        self.buckets = tuple(buckets)
        self._series: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            index = bisect_left(self.buckets, value)
            if index < len(self.buckets):
                series[index] += 1
            series[-2] += value
            series[-1] += 1

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            running = 0
            for bound, count in zip(self.buckets, series):
                running += count
                lines.append(f"{self.name}_bucket{_labels(key + (('le', _num(bound)),))} {running}")
            lines.append(f"{self.name}_bucket{_labels(key + (('le', '+Inf'),))} {series[-1]}")
            lines.append(f"{self.name}_sum{_labels(key)} {_num(series[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {series[-1]}")
        return lines


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class ServeMetrics:
    """The metrics one worker exports; names follow TGI's where one exists (tgi_* -> tuneforge_*)."""

    def __init__(self, queue_depth=lambda: 0, ready=lambda: False):
        self.requests = Counter("tuneforge_request_count", "Requests answered, by route and HTTP status.")
        self.duration = Histogram("tuneforge_request_duration_seconds", "Time from request to last byte.",
                                  LATENCY_BUCKETS)
        self.queue_time = Histogram("tuneforge_request_queue_duration_seconds",
                                    "Time a generation waited for a batch.", LATENCY_BUCKETS)
        self.input_tokens = Counter("tuneforge_request_input_tokens_total", "Prompt tokens received.")
        self.generated_tokens = Counter("tuneforge_request_generated_tokens_total", "Tokens generated.")
        self.batch_size = Histogram("tuneforge_batch_size", "Sequences per generate call.", BATCH_BUCKETS)
        self.batch_duration = Histogram("tuneforge_batch_forward_duration_seconds",
                                        "Wall time of one batched generate call.", LATENCY_BUCKETS)
        self.queue_depth = Gauge("tuneforge_queue_size", "Requests waiting for a batch.", queue_depth)
        self.ready = Gauge("tuneforge_model_ready", "1 once the model is loaded.", lambda: int(ready()))
        self._all = [self.requests, self.duration, self.queue_time, self.input_tokens,
                     self.generated_tokens, self.batch_size, self.batch_duration, self.queue_depth,
                     self.ready]

    def render(self) -> str:
        lines = []
        for metric in self._all:
            lines.extend(metric.render())
        lines.append("# HELP tuneforge_worker_info The worker process that answered this scrape.")
        lines.append("# TYPE tuneforge_worker_info gauge")
        lines.append(f'tuneforge_worker_info{{pid="{os.getpid()}"}} 1')
        return "\n".join(lines) + "\n"
