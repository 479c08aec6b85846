"""What a worker process of `structsent serve --workers N` does that a lone server does not.

uvicorn's supervisor starts N processes on one listening socket and starts a new one when one
dies. Each worker here:

- takes its settings from the environment the `serve` command filled in (``worker_environment``);
- serves only once its model is loaded: a worker that (re)starts while the others serve takes no
  connection before it can answer, where a lone server answers 503 while loading (its /health is
  the readiness probe);
- stops, gracefully, when the `serve` process is gone (killed with SIGKILL, say): the kernel does not
  end a dead parent's children, which kept answering on the port, and kept it, for ever.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

from ..pipeline import when_parent_ends

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .app import ServerSettings

log = logging.getLogger("structsent.server")

SETTINGS_ENVIRONMENT_VARIABLE = "STRUCTSENT_SERVER_SETTINGS"


def worker_environment(settings: ServerSettings) -> dict[str, str]:
    """The variables the `serve` process sets for its workers (spawned: they inherit its environment)."""
    return {SETTINGS_ENVIRONMENT_VARIABLE: settings.to_json()}


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
