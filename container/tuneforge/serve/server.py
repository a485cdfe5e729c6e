"""`serve`: check the model directory, then run gunicorn in this process.

gunicorn's master is this very process (no shell, no child launcher), so the SIGTERM
SageMaker sends reaches it directly and starts a graceful shutdown. The master never imports
torch; each worker builds the app and loads the model after the fork.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path

from ..diffusion import is_pipeline_dir
from ..errors import UserError
from .settings import ServeSettings

log = logging.getLogger("tuneforge.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve a tuneforge (or plain Hugging Face) model behind the SageMaker "
        "hosting contract: GET /ping, POST /invocations, plus TGI and OpenAI routes. Every option "
        "defaults to its environment variable (docs/serving.md).")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: SM_MODEL_DIR or /opt/ml/model)")
    parser.add_argument("--host", help="bind address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default SAGEMAKER_BIND_TO_PORT or 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (SAGEMAKER_MODEL_SERVER_WORKERS)")
    parser.add_argument("--threads", type=int, help="request threads per worker (TUNEFORGE_THREADS)")
    parser.add_argument("--timeout", type=int, help="worker silence timeout, s (SAGEMAKER_MODEL_SERVER_TIMEOUT)")
    parser.add_argument("--max-batch-size", type=int, help="sequences per generate call; 1 disables batching")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the model runs")
    parser.add_argument("--check", action="store_true", help="validate the model folder and exit")
    return parser


def resolve_settings(argv: list[str]) -> tuple[ServeSettings, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    settings = ServeSettings.from_env().with_overrides(
        model_dir=args.model_dir, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
        timeout=args.timeout, max_batch_size=args.max_batch_size, device=args.device)
    return settings, args


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind the serving port at once, so no other process takes it while the model is checked and
    a vLLM engine starts (a minute or more). It never listens: gunicorn binds the same port beside
    it (both set SO_REUSEADDR, which Linux allows while neither listens) and serves on its own."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; another process holds that port "
                        "(stop it, or choose another port with --port or SAGEMAKER_BIND_TO_PORT)") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    """Entry point of `serve` and `tuneforge serve`; returns the process exit status."""
    from .loader import check_model_dir
    from .vllm_launch import choose_engine

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # `docker run IMAGE serve` passes the word through
        argv = argv[1:]
    try:
        settings, args = resolve_settings(argv)
        reservation = None if args.check else reserve_port(settings.host, settings.port)
        if is_pipeline_dir(settings.model_dir):  # a text-to-image (diffusers) pipeline: serve/images.py
            from .images import check_pipeline_dir

            check_pipeline_dir(settings.model_dir)
            print(f"serve: text-to-image pipeline {settings.model_dir} on {settings.host}:{settings.port}",
                  file=sys.stderr, flush=True)
            return 0 if args.check else run_gunicorn(settings)
        info = check_model_dir(settings)
        choice = choose_engine(settings, info)
    except UserError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    kind = "LoRA adapter on " + str(info.base_dir) if info.adapter_only else "model"
    print(f"serve: {kind} {info.model_dir} (prompt format {info.prompt.kind}) on "
          f"{settings.host}:{settings.port}", file=sys.stderr, flush=True)
    print(f"serve: engine {choice.name}: {choice.reason}", file=sys.stderr, flush=True)
    if args.check:
        return 0
    try:
        if choice.name == "vllm":
            return run_with_vllm(settings, info, choice)
        return run_gunicorn(settings)
    finally:
        reservation.close()


def run_with_vllm(settings: ServeSettings, info, choice) -> int:
    """Start the instance's vLLM engine, run gunicorn in front of it, stop the engine after."""
    import os
    import signal

    from .vllm_launch import EngineProcess

    engine = EngineProcess(settings, info, choice)
    started = time.monotonic()
    url = engine.start()

    def engine_died(status: int) -> None:  # the workers cannot answer without it: stop as one
        print(f"serve: the vLLM engine exited with status {status}; stopping the server", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    engine.watch(engine_died)
    settings = settings.with_overrides(vllm_url=url, device="cuda" if choice.gpus else "cpu")
    try:
        status = run_gunicorn(settings)
    finally:
        engine.stop()
    if os.getpid() != engine.owner:  # a gunicorn worker (a fork) leaving through these frames
        return status
    print(f"serve: vLLM engine stopped after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return 1 if engine.died is not None else status


def run_gunicorn(settings: ServeSettings) -> int:
    from gunicorn.app.base import BaseApplication

    from . import gunicorn_conf

    class ServeApplication(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_conf.config(settings).items():
                self.cfg.set(key, value)

        def load(self):  # runs in each worker, after fork
            if is_pipeline_dir(settings.model_dir):
                from .images import create_app as create_image_app

                return create_image_app(settings)
            from .app import create_app

            return create_app(settings)

    try:
        ServeApplication().run()
    except SystemExit as exc:  # the arbiter exits with its status when it halts
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
