"""`structsent serve`: flags -> ServerSettings -> uvicorn. fastapi and uvicorn load only in ``run``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import NoReturn

from .._exit import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, Terminated
from .numbers import decimal, integer

API_KEY_ENVIRONMENT_VARIABLE = "STRUCTSENT_API_KEY"
# Open files a server needs besides its client connections (model files, runtime libraries,
# the event loop, logs...); the connection cap must fit in the process's limit with this spare.
SPARE_FILE_DESCRIPTORS = 128
# With --workers, uvicorn's supervisor waits this long for a worker's answer to its ping (a worker
# answers while its model loads), and for a new worker to serve in SIGHUP's rolling restart.
WORKER_READY_TIMEOUT_S = 60
# Server processes at most (as --model-workers): each loads its own model, so more is a typo, not a
# machine, and would start processes until memory runs out.
MAX_WORKERS = 64
UVICORN_STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: its exit status when it cannot start
# A stop while the model loads waits this long for the load to stop (it stops once the native call
# it is in returns: a fraction of a second for the bundled model), then the process ends without it.
LOAD_STOP_S = 10.0

log = logging.getLogger("structsent.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine_flags import add_engine_arguments

    add_engine_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    group.add_argument("--port", type=integer, default=8080, help="port to listen on, 0..65535 (0: any free port; default %(default)s)")
    group.add_argument("--max-wait-ms", type=decimal, default=0.0,
                       help="longest wait for more requests to merge, 0..60000 (default 0: merge what arrived while the model was busy)")
    group.add_argument("--max-queue", type=integer, default=4096, help="texts waiting at most; beyond: 429 (default %(default)s)")
    group.add_argument("--max-texts", type=integer, default=256, help="texts per request at most (413; default %(default)s)")
    group.add_argument("--max-text-chars", type=integer, default=20_000, help="characters per text at most (413; default %(default)s)")
    group.add_argument("--max-body-bytes", type=integer, default=1 << 20,
                       help="request body size at most, bytes (413; default %(default)s)")
    group.add_argument(
        "--max-connections", type=integer, default=256,
        help="open client connections at most, per process; beyond: 503 and closed (default 256)",
    )
    group.add_argument(
        "--read-timeout-s", type=decimal, default=10.0,
        help="seconds a client has to send a request's headers (from connecting or from its previous "
        "response), and again to send its body; beyond: 408 and closed (default 10)",
    )
    group.add_argument("--max-header-bytes", type=integer, default=64 * 1024,
                       help="request header size at most, bytes (431; at least 1024; default %(default)s)")
    group.add_argument(
        "--api-key", default=None,
        help=f"require `Authorization: Bearer <key>` on every route but /health, the API's description "
        f"and the page (401 without); "
        f"default: the environment variable {API_KEY_ENVIRONMENT_VARIABLE}, else no authentication",
    )
    group.add_argument(
        "--no-page", dest="page", action="store_false",
        help="do not serve the browser page at GET / (API clients are answered the same either way)",
    )
    group.add_argument(
        "--workers", type=integer, default=1,
        help=f"server processes, each with its own model and batcher, 1..{MAX_WORKERS} (metrics are per process; "
        "default %(default)s)",
    )
    group.add_argument(
        "--model-workers", type=integer, default=1,
        help="model calls at once per process, each on a thread of its own, 1..64 (default %(default)s; a GPU takes "
        "1); unless --num-threads is above 0 (0, its default, is the runtime's own), the CPU cores are divided among them",
    )
    group.add_argument(
        "--graceful-timeout", type=decimal, default=30.0,
        help="seconds to finish in-flight requests after SIGTERM (default %(default)g)",
    )
    group.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="(default %(default)s)")


def settings_from_args(args: argparse.Namespace, environ=None):
    """The ServerSettings of the flags; the API key from ``--api-key`` or else the environment."""
    import os

    from ..server.settings import ServerSettings
    from .engine_flags import engine_config

    environ = os.environ if environ is None else environ
    api_key = args.api_key if args.api_key is not None else environ.get(API_KEY_ENVIRONMENT_VARIABLE)
    if api_key is not None:
        # A key read from a secret file often ends in a newline, which no client can send in a
        # header (HTTP trims a header value's ends): it would refuse every request.
        api_key = api_key.strip()
    return ServerSettings(
        model=args.model,
        engine=engine_config(args),
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_text_chars=args.max_text_chars,
        max_queue=args.max_queue,
        max_wait_ms=args.max_wait_ms,
        max_connections=args.max_connections,
        read_timeout_s=args.read_timeout_s,
        max_header_bytes=args.max_header_bytes,
        api_key=api_key,
        page=args.page,
        model_workers=args.model_workers,
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "server")
    check_process_flags(args)
    settings = settings_from_args(args)
    reserve_file_descriptors(settings.max_connections)
    check_listen_address(args.host, args.port, workers=args.workers)
    if args.workers > 1:
        from ..server.workers import check_model_loads

        check_model_loads(settings)
    else:
        check_model_and_settings(settings)
    try:
        return _serve_processes(settings, args) if args.workers > 1 else _serve(settings, args)
    except SystemExit as err:  # uvicorn's exit when it could not start (it logged why)
        if err.code == UVICORN_STARTUP_FAILURE:
            # Most often the address, taken since it was checked (another server started at the same
            # moment): its one-line error and exit status 2, not uvicorn's 3, which here means the model.
            check_listen_address(args.host, args.port, workers=args.workers)
            raise ConfigError("the server could not start (uvicorn's reason is in the line above)") from None
        raise


def check_model_and_settings(settings) -> None:
    """A model named by a path that is no model directory, or broken, or settings it cannot run
    with (a token budget below its length, packed attention on ONNX, a device this host lacks),
    fail before the server listens: it listened, said "Uvicorn running on ...", then stopped
    once the load in the background failed. The checkpoint is read here and again by that load
    (which then exports and warms up while /health answers)."""
    from ..runtime import check_model_and_settings as check
    from ..server.settings import engine_config_for

    check(settings.model, engine_config_for(settings))


def check_listen_address(host: str, port: int, *, workers: int = 1) -> None:
    """Refuse, before the model loads, an address this process cannot listen on (a host that does
    not resolve, a port in use or not allowed): uvicorn said so in a log line after loading the
    model and exited with the status of a broken model. Probed as uvicorn binds: one process binds
    every address the host resolves to; with --workers, one socket of the host's family."""
    import socket

    from ..errors import ConfigError

    try:
        addresses: list[tuple[socket.AddressFamily, tuple]]
        if workers > 1:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            addresses = [(family, (host, port))]
        else:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host}: not an address this machine can listen on ({err})") from None
    for family, address in addresses:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds
                probe.bind(address)
        except (OSError, UnicodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({reason})") from None


def check_process_flags(args: argparse.Namespace) -> None:
    """The flags that ServerSettings does not hold (they are the process's, not the app's)."""
    import math

    from ..errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be in 0..65535 (0: any free port)")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {args.workers}: must be in 1..{MAX_WORKERS} (each process loads its own model)")
    if not (math.isfinite(args.graceful_timeout) and args.graceful_timeout >= 0):
        raise ConfigError(f"--graceful-timeout {args.graceful_timeout}: must be a finite number of seconds >= 0")


def _serve(settings, args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")

    from ..server.app import create_app
    from ..server.logs import limit_server_logs
    from ..server.service import SentimentService

    service = SentimentService(settings)
    server = uvicorn.Server(_uvicorn_config(create_app(settings, service=service), settings, args))
    limit_server_logs()  # after uvicorn.Config has configured its loggers
    service.on_fatal = lambda: setattr(server, "should_exit", True)
    try:
        _run_until_stopped(server)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn raises it again once it has shut down
        end_the_load(service, exit_status=EXIT_INTERRUPTED, farewell="structsent: interrupted")
        raise
    except SystemExit:  # uvicorn could not start (an address taken since it was checked): the load, begun, stops
        end_the_load(service, exit_status=EXIT_BAD_INPUT,
                     farewell="structsent: error: the server could not start (uvicorn's reason is in the line above)")
        raise
    end_the_load(service, exit_status=EXIT_OK)
    if service.load_error is not None:
        raise service.load_error
    return 0 if server.started else 1


def _run_until_stopped(server) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with this
    # handler in place that ends the process with status 0 instead of a death by SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with _hang_up_stops_gracefully(server):
            server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _hang_up_stops_gracefully(server) -> Iterator[None]:
    """SIGHUP (a reload asked of a service manager, a terminal hung up) stops a lone server as
    SIGTERM does, requests in flight answered, and says so: its default action ended the process at
    once (status 129, the requests in flight cut off, nothing logged). A rolling restart needs
    --workers. Left alone where the server was started ignoring it (nohup)."""
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        yield
        return

    def stop(signum, frame) -> None:
        log.warning("SIGHUP: stopping as on SIGTERM, requests in flight answered (a lone server does not "
                    "reload; with --workers N, SIGHUP replaces the workers one at a time)")
        server.should_exit = True

    previous = signal.signal(signal.SIGHUP, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def end_the_load(service, *, exit_status: int, farewell: str | None = None) -> None:
    """A server stopped while its model loads (an ONNX export into the cache takes seconds): the
    load is stopped and its cleanups run (the export's staging is removed), within LOAD_STOP_S.
    The process ended through the interpreter's finalisation with the export still in native code,
    which aborted it (SIGABRT, "terminate called without an active exception"). A load still
    running after LOAD_STOP_S, or a second signal meanwhile, ends the process at once with
    ``exit_status``, its export's staging removed here."""
    try:
        if service.stop_loading(LOAD_STOP_S):
            return
        log.warning("the model's load did not stop within %g s; exiting without waiting for it", LOAD_STOP_S)
    except Terminated:  # SIGTERM again: no more waiting
        exit_status, farewell = EXIT_TERMINATED, "structsent: terminated"
    except KeyboardInterrupt:  # Ctrl-C again
        exit_status, farewell = EXIT_INTERRUPTED, "structsent: interrupted"
    exit_at_once(exit_status, farewell)


def exit_at_once(exit_status: int, farewell: str | None) -> NoReturn:
    """End the process now, without the interpreter's finalisation (a thread still runs native
    code): this process's export staging removed, its last line said, the logs flushed."""
    import os
    import sys

    from ..onnx.cache import remove_own_staging

    remove_own_staging()
    if farewell is not None:
        print(farewell, file=sys.stderr)
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(exit_status)


def _serve_processes(settings, args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from ..server.workers import serve_workers, worker_environment

    os.environ.update(worker_environment(settings))
    stopped_by = serve_workers(settings, uvicorn.Config(
        "structsent.server.workers:app_from_environment", factory=True, workers=args.workers,
        timeout_worker_healthcheck=WORKER_READY_TIMEOUT_S,
        **_uvicorn_options(settings, args),
    ))
    if stopped_by == signal.SIGINT:  # Ctrl-C: exit 130 with its line, as a lone server (SIGTERM: 0)
        raise KeyboardInterrupt
    return 0


def _uvicorn_config(app, settings, args: argparse.Namespace):
    import uvicorn

    return uvicorn.Config(app, **_uvicorn_options(settings, args))


def _uvicorn_options(settings, args: argparse.Namespace) -> dict:
    from ..server.connections import PROTOCOL_NAME

    return dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # per-request lines cost more than the model at high rates; see /metrics
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
        http=PROTOCOL_NAME,  # uvicorn's protocol with the connection cap and header deadline
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def reserve_file_descriptors(max_connections: int) -> None:
    """Make room for ``max_connections`` sockets in the open-file limit (raising the soft limit
    up to the hard one if needed), or refuse to start: a server out of file descriptors fails
    every request and floods its log."""
    import resource

    from ..errors import ConfigError

    needed = max_connections + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"--max-connections {max_connections} needs {needed} open files, but this process may open "
            f"{hard} (ulimit -n): lower --max-connections or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
