"""Prometheus metrics for GET /metrics, through prometheus_client.

Under gunicorn every worker writes its numbers to files in PROMETHEUS_MULTIPROC_DIR (set by
gunicorn_conf before the workers start), and a scrape answered by any worker adds up all of
them: counters and histograms sum over workers, `tuneforge_queue_size` sums the live workers'
queues, `tuneforge_model_ready` is 1 only when every live worker is ready, and
`tuneforge_worker_info{pid}` lists the live workers. Without that variable (the app outside
gunicorn, tests) each ServeMetrics keeps its own registry.
"""

from __future__ import annotations

import os

from ..contract import PROMETHEUS_MULTIPROC_DIR, prometheus_multiproc_dir

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MULTIPROCESS_DIR = PROMETHEUS_MULTIPROC_DIR


def multiprocess() -> bool:
    return bool(prometheus_multiproc_dir())


class _Labelled:
    """`inc(amount, **labels)` / `observe(value, **labels)` over a prometheus_client metric."""

    def __init__(self, metric, labelnames: tuple):
        self.metric, self.labelnames = metric, labelnames

    def _child(self, labels: dict):
        return self.metric.labels(**labels) if self.labelnames else self.metric

    def inc(self, amount: float = 1, **labels) -> None:
        self._child(labels).inc(amount)

    def observe(self, value: float, **labels) -> None:
        self._child(labels).observe(value)

    def value(self, **labels) -> float:
        return self._child(labels)._value.get()


class _Reading:
    """A gauge whose value is read from a callable: when the owner calls `refresh()` (on every
    change, so other workers' scrapes see it) and before each scrape of this worker."""

    def __init__(self, gauge, read):
        self.gauge, self.read = gauge, read

    def refresh(self) -> None:
        self.gauge.set(float(self.read()))


class ServeMetrics:
    """The metrics a server exports; names follow TGI's where one exists (tgi_* -> tuneforge_*)."""

    def __init__(self, queue_depth=lambda: 0, ready=lambda: False):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: multiprocess mode has none either
        shared = multiprocess()
        self.registry = None if shared else CollectorRegistry()
        reg = {"registry": self.registry}

        def counter(name, text, labels=()):
            return _Labelled(Counter(name, text, labels, **reg), labels)

        def histogram(name, text, buckets, labels=()):
            return _Labelled(Histogram(name, text, labels, buckets=buckets, **reg), labels)

        self.requests = counter("tuneforge_request_count", "Requests answered, by route and HTTP status.",
                                ("route", "status"))
        self.duration = histogram("tuneforge_request_duration_seconds", "Time from request to last byte.",
                                  LATENCY_BUCKETS, ("route",))
        self.queue_time = histogram("tuneforge_request_queue_duration_seconds",
                                    "Time a generation waited for a batch.", LATENCY_BUCKETS)
        self.input_tokens = counter("tuneforge_request_input_tokens", "Prompt tokens received.")
        self.generated_tokens = counter("tuneforge_request_generated_tokens", "Tokens generated.")
        self.batch_size = histogram("tuneforge_batch_size", "Sequences per generate call.", BATCH_BUCKETS)
        self.batch_duration = histogram("tuneforge_batch_forward_duration_seconds",
                                        "Wall time of one batched generate call.", LATENCY_BUCKETS)
        self.queue_depth = _Reading(Gauge("tuneforge_queue_size", "Requests waiting for a batch.",
                                          multiprocess_mode="livesum", **reg), queue_depth)
        self.ready = _Reading(Gauge("tuneforge_model_ready", "1 once the model is loaded (in every worker).",
                                    multiprocess_mode="livemin", **reg), lambda: int(ready()))
        worker = Gauge("tuneforge_worker_info", "The live worker processes.", () if shared else ("pid",),
                       multiprocess_mode="liveall", **reg)
        (worker if shared else worker.labels(pid=str(os.getpid()))).set(1)

    def render(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        self.queue_depth.refresh()
        self.ready.refresh()
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry).decode()


# ---------------------------------------------------------------------- gunicorn master hooks
def prepare_multiprocess_dir(server=None) -> None:
    """on_starting: one empty folder for the workers' metric files, before any worker starts.
    PROMETHEUS_MULTIPROC_DIR when set (its old files are removed), else a new temporary folder."""
    import tempfile
    from pathlib import Path

    folder = prometheus_multiproc_dir()
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="tuneforge-metrics-", dir=shm)
        os.environ["TUNEFORGE_METRICS_DIR_OWNED"] = "1"


def worker_gone(server, worker) -> None:
    """child_exit: the worker's live gauges leave the sums; its counters stay counted."""
    if multiprocess():
        from prometheus_client import multiprocess as prometheus_multiprocess

        prometheus_multiprocess.mark_process_dead(worker.pid)


def remove_multiprocess_dir(server=None) -> None:
    """on_exit: remove the folder if prepare_multiprocess_dir made it."""
    import shutil

    if os.environ.pop("TUNEFORGE_METRICS_DIR_OWNED", None) and multiprocess():
        shutil.rmtree(prometheus_multiproc_dir(), ignore_errors=True)


def add_request_accounting(app, metrics: ServeMetrics) -> None:
    """Count every request of a Flask app by route and status, time it, and say the time in its
    x-total-time header (both servers)."""
    import time

    from flask import Response, g, request

    @app.before_request
    def _start_timer():
        g.started = time.monotonic()

    @app.after_request
    def _account(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "other"
        started, status = g.get("started", time.monotonic()), response.status_code

        def record():  # on close, so a streamed response counts its whole duration
            metrics.requests.inc(route=rule, status=status)
            metrics.duration.observe(time.monotonic() - started, route=rule)

        response.call_on_close(record)
        response.headers["x-total-time"] = str(int((time.monotonic() - started) * 1000))
        return response
