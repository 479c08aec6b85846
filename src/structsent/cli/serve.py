"""`structsent serve`: flags -> ServerSettings -> uvicorn. fastapi and uvicorn load only in ``run``."""

from __future__ import annotations

import argparse
import signal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine_flags import add_engine_arguments

    add_engine_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on")
    group.add_argument("--port", type=int, default=8080)
    group.add_argument("--max-wait-ms", type=float, default=0.0,
                       help="longest wait for more requests to merge (default 0: merge what arrived while the model was busy)")
    group.add_argument("--max-queue", type=int, default=4096, help="texts waiting at most; beyond: 429")
    group.add_argument("--max-texts", type=int, default=256, help="texts per request at most (413)")
    group.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text at most (413)")
    group.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body size at most (413)")
    group.add_argument(
        "--workers", type=int, default=1,
        help="server processes, each with its own model and batcher (metrics are per process)",
    )
    group.add_argument(
        "--graceful-timeout", type=float, default=30.0,
        help="seconds to finish in-flight requests after SIGTERM",
    )
    group.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def settings_from_args(args: argparse.Namespace):
    from ..server.app import ServerSettings
    from .engine_flags import engine_config

    return ServerSettings(
        model=args.model,
        engine=engine_config(args),
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_text_chars=args.max_text_chars,
        max_queue=args.max_queue,
        max_wait_ms=args.max_wait_ms,
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "server")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    settings = settings_from_args(args)
    if args.workers > 1:
        return _serve_processes(settings, args)
    return _serve(settings, args)


def _serve(settings, args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")

    from ..server.app import SentimentService, create_app

    service = SentimentService(settings)
    server = uvicorn.Server(_uvicorn_config(create_app(settings, service=service), args))
    service.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with this
    # handler in place that ends the process with status 0 instead of a death by SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if service.load_error is not None:
        raise service.load_error
    return 0 if server.started else 1


def _serve_processes(settings, args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from ..server.app import SETTINGS_ENVIRONMENT_VARIABLE

    os.environ[SETTINGS_ENVIRONMENT_VARIABLE] = settings.to_json()
    uvicorn.run(
        "structsent.server.app:app_from_environment", factory=True, workers=args.workers, **_uvicorn_options(args)
    )
    return 0


def _uvicorn_config(app, args: argparse.Namespace):
    import uvicorn

    return uvicorn.Config(app, **_uvicorn_options(args))


def _uvicorn_options(args: argparse.Namespace) -> dict:
    return dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # per-request lines cost more than the model at high rates; see /metrics
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
    )
