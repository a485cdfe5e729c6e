"""gunicorn settings and hooks for `serve`, built from ServeSettings.

- gthread workers (worker.py's ReadFirstWorker): one process per model copy, a thread per
  in-flight request, each request read whole by the worker's event loop before a thread gets it
  (slow clients cost no thread); the batching engine turns the threads' requests into shared
  generate calls.
- No preload: the app, and with it the model, is created in the worker after fork.
- graceful_timeout below SageMaker's 30 s SIGTERM->SIGKILL window, so in-flight requests end
  before the kill.
"""

from __future__ import annotations

import os

from .metrics import prepare_multiprocess_dir, remove_multiprocess_dir, worker_gone
from .settings import ServeSettings
from .worker import worker_class

WORKER_BOOT_ERROR = 3  # gunicorn's Arbiter halts the whole server on this worker exit code
KEEPALIVE_S = 60  # SageMaker's front end reuses connections; do not drop them after 2 s
ACCESS_LOG_FORMAT = ('%(h)s "%(r)s" %(s)s %(B)s %(M)sms queue=%({x-queue-time}o)sms '
                     'inference=%({x-inference-time}o)sms prompt_tokens=%({x-prompt-tokens}o)s '
                     'generated_tokens=%({x-generated-tokens}o)s')


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def post_worker_init(worker) -> None:
    """Start loading the model in this worker; /ping answers 503 meanwhile."""
    state = worker.wsgi.extensions["tuneforge"]

    def failed(exc: Exception) -> None:
        # A worker that cannot load the model would be restarted forever; exiting with the boot
        # error code makes the master stop, so `serve` fails with the reason in its log.
        worker.log.error("tuneforge: model failed to load, stopping the server: %s", exc)
        os._exit(WORKER_BOOT_ERROR)

    state.start_loading(on_failure=failed)


def worker_exit(server, worker) -> None:
    state = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("tuneforge")
    if state is not None and state.engine is not None:
        state.engine.close()


def config(settings: ServeSettings) -> dict:
    access_log = None if settings.access_log.lower() in ("off", "none", "false") else settings.access_log
    options = {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        "worker_class": worker_class(settings.max_body_bytes, settings.request_read_timeout,
                                     settings.body_limit_message),
        "threads": settings.threads,
        "worker_connections": max(1000, 2 * settings.threads),
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": KEEPALIVE_S,
        "preload_app": False,
        "accesslog": access_log,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "tuneforge-serve",
        # The runtime control socket (gunicorn >= 25) is not part of the SageMaker contract and
        # two servers on one host would fight over its default path.
        "control_socket_disable": True,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        # /metrics adds up every worker's numbers (prometheus_client multiprocess mode)
        "on_starting": prepare_multiprocess_dir,
        "child_exit": worker_gone,
        "on_exit": remove_multiprocess_dir,
    }
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat file off a possibly slow overlay disk
    return options
