"""What a worker process of `structsent serve --workers N` does that a lone server does not.

uvicorn's supervisor starts N processes on one listening socket and starts a new one when one
dies. Each worker here:

- takes its settings from the environment the `serve` command filled in (``worker_environment``);
- serves only once its model is loaded: a worker that (re)starts while the others serve takes no
  connection before it can answer, where a lone server answers 503 while loading (its /health is
  the readiness probe);
- stops, gracefully, when the `serve` process is gone (killed with SIGKILL, say): the kernel does not
  end a dead parent's children, which kept answering on the port, and kept it, for ever.

The supervisor (``serve_workers``) is uvicorn's, but closes its copy of the listening socket as soon
as it stops: the workers close theirs at the start of their graceful shutdown, and with the
supervisor's still open the kernel kept accepting connections that nobody would take, held until
the last worker ended and then reset; they are refused at once now, as by a lone server.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

from ..pipeline import when_parent_ends

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from .app import ServerSettings

log = logging.getLogger("structsent.server")

SETTINGS_ENVIRONMENT_VARIABLE = "STRUCTSENT_SERVER_SETTINGS"


def worker_environment(settings: ServerSettings) -> dict[str, str]:
    """The variables the `serve` process sets for its workers (spawned: they inherit its environment)."""
    return {SETTINGS_ENVIRONMENT_VARIABLE: settings.to_json()}


def serve_workers(config: uvicorn.Config) -> None:
    """Run ``config.workers`` worker processes under uvicorn's supervisor until it is stopped."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def terminate_all(self) -> None:  # called once, when the supervisor stops
            for sock in self.sockets:
                sock.close()  # new connections are refused from now on, not queued for nobody
            super().terminate_all()

    sock = config.bind_socket()  # (exits with uvicorn's startup failure status if it cannot)
    try:
        Supervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:  # as uvicorn.run
        pass
    finally:
        sock.close()


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    from .app import ServerSettings, create_app
    from .logs import limit_server_logs

    limit_server_logs()  # uvicorn has configured this process's loggers by now
    settings = ServerSettings.from_json(os.environ[SETTINGS_ENVIRONMENT_VARIABLE])
    when_parent_ends(_stop_this_worker, name="structsent-supervisor-watch")
    return create_app(settings, serve_once_loaded=True)


def _stop_this_worker() -> None:
    """As SIGTERM stops it: requests in flight are finished, the listening socket closed."""
    log.warning("the serve process is gone: this worker stops")
    os.kill(os.getpid(), signal.SIGTERM)
