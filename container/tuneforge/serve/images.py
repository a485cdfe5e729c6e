"""The Flask app that serves a Stable Diffusion pipeline: /ping, /invocations (JumpStart's format).

Built by `serve` when model/ holds model_index.json, and run by the same gunicorn setup as the
language models: the pipeline loads in a thread of each worker after fork (/ping says 503 until
it is ready), one image request runs at a time per worker (the rest wait, up to max_queue, then
429), and a generation still running at the request deadline is stopped at its next denoising
step (503). The language-model routes answer with an error that says what this endpoint serves.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

from flask import Flask, Response, g, request

from ..errors import ModelError
from .errors import add_error_handlers
from .loading import BackgroundLoad
from .metrics import ServeMetrics, add_request_accounting
from ..diffusion import PIPELINE_INDEX
from .image_payloads import JPEG_ACCEPT, ImageRequestError, Limits, check_response_size, parse, render, wants_jpeg

log = logging.getLogger("tuneforge.serve")

LANGUAGE_MODEL_ROUTES = ("/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions", "/v1/models",
                         "/tokenize")
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5  # JumpStart's defaults for Stable Diffusion


class Interrupted(Exception):
    """The request deadline passed during generation."""


def check_pipeline_dir(model_dir: Path) -> dict:
    """File checks only (the gunicorn master must not import torch); tuneforge.json's content or {}."""
    from ..diffusion import is_pipeline_dir
    from ..model_folder import METADATA_FILE

    model_dir = Path(model_dir)
    if not is_pipeline_dir(model_dir):
        raise ModelError(f"{model_dir} holds no {PIPELINE_INDEX}", fix="point the server at a diffusers pipeline folder")
    for part in ("unet", "vae", "text_encoder"):
        if not any((model_dir / part).glob("*.safetensors")):
            raise ModelError(f"{part}/ holds no .safetensors weights", where=str(model_dir / part),
                             fix="copy the complete pipeline folder (save_pretrained(..., safe_serialization=True))")
    try:
        return json.loads((model_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return {}


class ImageState(BackgroundLoad):
    """What one worker holds: the pipeline once loaded, a lock that runs one request at a time."""

    engine = None  # gunicorn_conf's worker_exit closes an LLM engine; there is none here
    what = "pipeline"

    def __init__(self, settings):
        self.settings, self.limits = settings, Limits.from_env()
        self.status, self.error, self.pipeline = "loading", None, None
        self.lock, self.waiting = threading.Lock(), 0
        # admits the request running plus max_queue waiting ones; the rest get 429 at once
        self.admission = threading.BoundedSemaphore(settings.max_queue + 1)
        self.device, self.defaults = "cpu", {}
        self.metrics = ServeMetrics(queue_depth=lambda: self.waiting, ready=lambda: self.status == "ready")

    def load(self) -> None:
        self.pipeline = load_pipeline(self.settings)
        self.device = str(self.pipeline.device)
        side = self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor
        self.defaults = {"width": side, "height": side, "num_inference_steps": DEFAULT_STEPS,
                         "guidance_scale": DEFAULT_GUIDANCE}

    def ready(self, seconds: float) -> None:
        log.info("pipeline ready after %.1f s on %s (default %dx%d)", seconds, self.device,
                 self.defaults["width"], self.defaults["height"])

    def generate(self, req):
        """uint8 images (N, H, W, 3), one request at a time; 429 past max_queue, 503 past the deadline."""
        deadline = g.started + self.settings.request_deadline
        if not self.admission.acquire(blocking=False):
            raise ImageRequestError(429, f"{self.settings.max_queue} requests are already waiting (TUNEFORGE_MAX_QUEUE); "
                                    "retry later", "overloaded")
        try:
            self.waiting += 1  # the gauge only; admission is what bounds the queue
            acquired = self.lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            self.waiting -= 1
            if not acquired:
                raise ImageRequestError(503, "the request waited past its deadline behind earlier ones", "timeout")
            try:
                return run_pipeline(self.pipeline, req, deadline, self.settings.request_deadline)
            finally:
                self.lock.release()
        finally:
            self.admission.release()


def load_pipeline(settings):
    import torch
    from diffusers import StableDiffusionPipeline

    from ..diffusion.model import quiet_progress_bars

    check_pipeline_dir(settings.model_dir)
    quiet_progress_bars()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(settings.dtype)
    if dtype is None:  # auto: half precision on GPUs, as Stable Diffusion is served
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipeline = StableDiffusionPipeline.from_pretrained(settings.model_dir, dtype=dtype, local_files_only=True,
                                                       use_safetensors=True, safety_checker=None,
                                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def run_pipeline(pipeline, req, deadline: float, budget_s: float):
    import numpy as np
    import torch

    # what the caller can change: a plain-text prompt runs with the endpoint's defaults
    remedy = ('send the prompt as JSON ({"prompt": "...", "num_inference_steps": 20, "width": 512, "height": 512}) '
              "to ask for fewer steps or a smaller image" if req.single else
              "ask for fewer steps (num_inference_steps), fewer or smaller images")

    def stop_at_deadline(pipe, step, timestep, kwargs):  # noqa: ARG001 - diffusers' callback signature
        if time.monotonic() > deadline:
            raise Interrupted(f"generation did not finish within {budget_s:g} s (TUNEFORGE_REQUEST_DEADLINE); "
                              f"{remedy}, or raise TUNEFORGE_REQUEST_DEADLINE")
        return {}

    generator = torch.Generator().manual_seed(req.seed) if req.seed is not None else None
    with torch.inference_mode():
        images = pipeline(req.prompts, negative_prompt=req.negative_prompts, width=req.width, height=req.height,
                          num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale,
                          num_images_per_prompt=req.num_images_per_prompt, generator=generator,
                          output_type="np", callback_on_step_end=stop_at_deadline).images
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status=status, mimetype="application/json")


def error_response(status: int, message: str, error_type: str) -> Response:
    return _json({"error": message, "error_type": error_type}, status)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("tuneforge")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)


def create_app(settings) -> Flask:
    _configure_logging(settings.log_level)
    app = Flask("tuneforge.serve.diffusion")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    state = ImageState(settings)
    app.extensions["tuneforge"] = state

    add_request_accounting(app, state.metrics)

    @app.get("/ping")
    @app.get("/health")
    def ping():
        if state.status == "ready":
            return _json({"status": "ready"})
        message = "pipeline is loading" if state.status == "loading" else f"pipeline failed to load: {state.error}"
        return error_response(503, message, "unhealthy")

    @app.post("/invocations")
    @app.post("/")
    def invocations():
        if state.status != "ready":
            raise ImageRequestError(503, "pipeline is loading" if state.status == "loading"
                                    else f"pipeline failed to load: {state.error}", "unhealthy")
        jpeg = wants_jpeg(request.headers.get("Accept"))
        req = parse((request.mimetype or "application/json").lower(), request.get_data(cache=False),
                    state.defaults, state.limits)
        req.jpeg = jpeg
        check_response_size(req, state.limits)
        body = render(req, state.generate(req), state.limits)
        return Response(body, mimetype="application/json")

    _add_info_routes(app, state, settings)
    _add_language_model_routes(app)
    add_error_handlers(app, error_response, settings.body_limit_message, _known_error)
    return app


def _add_info_routes(app: Flask, state: ImageState, settings) -> None:
    @app.get("/info")
    def info():
        metadata = check_pipeline_dir(settings.model_dir)
        return _json({"model_dir": str(settings.model_dir), "task": "text-to-image", "status": state.status,
                      "device": state.device, "defaults": state.defaults,
                      "instance_prompt": metadata.get("instance_prompt"), "accept": ["application/json", JPEG_ACCEPT],
                      "limits": vars(state.limits)})

    @app.get("/execution-parameters")
    def execution_parameters():
        payload = min(100, max(1, math.ceil(settings.max_body_mb)))
        return _json({"MaxConcurrentTransforms": max(1, settings.workers), "BatchStrategy": "SINGLE_RECORD",
                      "MaxPayloadInMB": payload})

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.render(), mimetype="text/plain; version=0.0.4")


def _add_language_model_routes(app: Flask) -> None:
    def wrong_kind():
        raise ImageRequestError(400, f"{request.path} is a language-model route, but this endpoint serves a "
                                "text-to-image model (Stable Diffusion); POST /invocations with Content-Type "
                                'application/json {"prompt": "..."} or application/x-text', "wrong_model_kind")

    for path in LANGUAGE_MODEL_ROUTES:
        app.add_url_rule(path, f"language_model_{path}", wrong_kind, methods=["GET", "POST"])


def _known_error(exc: Exception) -> tuple[int, str] | None:
    """(status, error_type) of the errors a text-to-image request can meet; None: unexpected."""
    if isinstance(exc, ImageRequestError):
        return exc.status, exc.error_type
    return (503, "timeout") if isinstance(exc, Interrupted) else None
