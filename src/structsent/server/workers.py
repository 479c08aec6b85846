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
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .app import ServerSettings

log = logging.getLogger("structsent.server")

SETTINGS_ENVIRONMENT_VARIABLE = "STRUCTSENT_SERVER_SETTINGS"
SUPERVISOR_ENVIRONMENT_VARIABLE = "STRUCTSENT_SERVER_SUPERVISOR"  # the pid of the `serve` process
SUPERVISOR_CHECK_S = 0.5


def worker_environment(settings: ServerSettings, supervisor_pid: int) -> dict[str, str]:
    """The variables the `serve` process sets for its workers (spawned: they inherit its environment)."""
    return {SETTINGS_ENVIRONMENT_VARIABLE: settings.to_json(), SUPERVISOR_ENVIRONMENT_VARIABLE: str(supervisor_pid)}


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    from .app import ServerSettings, create_app
    from .logs import limit_server_logs

    limit_server_logs()  # uvicorn has configured this process's loggers by now
    settings = ServerSettings.from_json(os.environ[SETTINGS_ENVIRONMENT_VARIABLE])
    supervisor = os.environ.get(SUPERVISOR_ENVIRONMENT_VARIABLE)
    if supervisor is not None:
        stop_when_orphaned(int(supervisor))
    return create_app(settings, serve_once_loaded=True)


def stop_when_orphaned(supervisor_pid: int, *, check_s: float = SUPERVISOR_CHECK_S) -> threading.Thread:
    """Watch, in a daemon thread, that this process's parent is still ``supervisor_pid``; once it is
    not (the parent died and the process was handed to another), shut this process down as SIGTERM
    does: requests in flight are finished, the listening socket closed."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(check_s)
        log.warning("the serve process (pid %d) is gone: this worker stops", supervisor_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="structsent-supervisor-watch", daemon=True)
    thread.start()
    return thread
