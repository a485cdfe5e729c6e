"""The Flask app: SageMaker's /ping and /invocations plus TGI- and OpenAI-compatible routes.

The model loads in a background thread of each gunicorn worker (started by the
post_worker_init hook, never in the master: CUDA does not survive fork), so /ping can say
503 while it loads and 200 once it is ready. Every error is JSON {"error", "error_type"}.
Routes are in routes.py (blueprints), generation in generation.py, errors in errors.py.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask

from .engine import Engine
from .errors import add_error_handlers
from .http import error_response
from .loading import BackgroundLoad
from .metrics import ServeMetrics, add_request_accounting
from .payloads import Parser
from .settings import ServeSettings

log = logging.getLogger("tuneforge.serve")


class ServerState(BackgroundLoad):
    """What one worker holds: the model once loaded, its batching engine, its metrics."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.status, self.error = "loading", None
        self.loaded = self.engine = self.parser = None
        self.metrics = ServeMetrics(queue_depth=lambda: self.engine.queue_depth() if self.engine else 0,
                                    ready=lambda: self.status == "ready")

    def load(self) -> None:
        from .loader import load_model

        on_vllm = self.settings.vllm_url is not None
        loaded = load_model(self.settings, weights=not on_vllm)
        if on_vllm:  # the instance's one vLLM engine (started by `serve`) holds the weights
            from .vllm_engine import VllmEngine
            from .vllm_launch import wait_healthy

            wait_healthy(self.settings.vllm_url, self.settings.vllm_start_timeout)
            self.engine = VllmEngine(loaded, self.settings, self.metrics)
        else:
            self.engine = Engine(loaded, self.settings, self.metrics)
        self.parser = Parser(loaded, self.settings)
        self.loaded = loaded

    def ready(self, seconds: float) -> None:
        self.metrics.ready.refresh()
        log.info("model ready after %.1f s (engine: %s)", seconds,
                 "vllm" if self.settings.vllm_url is not None else "transformers")


def create_app(settings: ServeSettings | None = None, *, load: bool = False) -> Flask:
    """The WSGI app. `load=True` starts loading at once (for use outside gunicorn)."""
    from .routes import api, core

    settings = settings or ServeSettings.from_env()
    _configure_logging(settings.log_level)
    app = Flask("tuneforge.serve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    state = ServerState(settings)
    app.extensions["tuneforge"] = state
    app.register_blueprint(core)
    app.register_blueprint(api)
    app.register_blueprint(api, url_prefix="/invocations", name="invocations_api")
    add_request_accounting(app, state.metrics)
    add_error_handlers(app, error_response, settings.body_limit_message)
    if load:
        state.start_loading()
    return app


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("tuneforge")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
