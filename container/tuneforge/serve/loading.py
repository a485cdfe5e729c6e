"""Loading a server's model in the background, for both servers (language models, images).

Each gunicorn worker loads on a thread started after it forks (never in the master: CUDA does not
survive fork), so /ping answers "loading" (503) until the model is ready and "failed" with the
first line of the error after; `on_failure` (the worker's exit) gets the exception.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("tuneforge.serve")


def first_line(exc: BaseException) -> str:
    """What /ping and the log say of a failed load: the error's first line, or its type."""
    text = str(exc)
    return text.splitlines()[0][:500] if text.strip() else type(exc).__name__


class BackgroundLoad:
    """A server state's loading: subclasses set `what` and define `load()` (which sets up the
    state) and may define `ready(seconds)`; `status` and `error` are what /ping reports."""
    what = "model"
    status: str = "loading"
    error: str | None = None

    def load(self) -> None:
        raise NotImplementedError

    def ready(self, seconds: float) -> None:
        log.info("%s ready after %.1f s", self.what, seconds)

    def start_loading(self, on_failure=None) -> threading.Thread:
        thread = threading.Thread(target=self._load_now, args=(on_failure,), name="tuneforge-load", daemon=True)
        thread.start()
        return thread

    def _load_now(self, on_failure) -> None:
        started = time.monotonic()
        try:
            self.load()
            self.status = "ready"
            self.ready(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - reported on /ping and by on_failure
            self.status, self.error = "failed", first_line(exc)
            log.exception("%s failed to load: %s", self.what, self.error)
            if on_failure is not None:
                on_failure(exc)
