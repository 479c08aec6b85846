"""What a worker process of `structsent serve --workers N` does that a lone server does not.

uvicorn's supervisor starts N processes on one listening socket and starts a new one when one
dies. Each worker here:

- takes its settings from the environment the `serve` command filled in (``worker_environment``);
- serves only once its model is loaded: a worker that (re)starts while the others serve takes no
  connection before it can answer, where a lone server answers 503 while loading (its /health is
  the readiness probe);
- stops, gracefully, when the `serve` process is gone (killed with SIGKILL, say): the kernel does not
  end a dead parent's children, which kept answering on the port, and kept it, for ever.

The supervisor (``serve_workers``) is uvicorn's, with three changes: it closes its copy of the
listening socket as soon as it stops (the workers close theirs at the start of their graceful
shutdown, and with the supervisor's still open the kernel kept accepting connections that nobody
would take, held until the last worker ended and then reset; they are refused at once now, as by a
lone server); SIGHUP's rolling restart loads the model once first (``check_model_loads``) and
replaces no worker if it does not load (a broken checkpoint replaced every serving worker by one
answering 503); and SIGTERM or Ctrl-C during that restart stops it at once (they waited until every
new worker had loaded, 60 s each at most, while the old ones went on taking connections).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..lines import one_line
from ..pipeline import when_parent_ends

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from .settings import ServerSettings

log = logging.getLogger("structsent.server")

SETTINGS_ENVIRONMENT_VARIABLE = "STRUCTSENT_SERVER_SETTINGS"


def worker_environment(settings: ServerSettings) -> dict[str, str]:
    """The variables the `serve` process sets for its workers (spawned: they inherit its environment)."""
    return {SETTINGS_ENVIRONMENT_VARIABLE: settings.to_json()}


def serve_workers(settings: ServerSettings, config: uvicorn.Config) -> int | None:
    """Run ``config.workers`` worker processes under uvicorn's supervisor until it is stopped; the
    signal that stopped it (None: it stopped of itself, a worker that cannot start)."""
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import Process

    class Supervisor(Multiprocess):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn queues a signal for its loop, which a rolling restart holds; this flag is seen
            # at once (set from the handler: no lock the main thread could be holding).
            self.stop_asked = threading.Event()
            self.stopped_by: int | None = None
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self._stop_signal)

        def _stop_signal(self, signum, frame) -> None:
            self.signal_queue.append(signum)  # handled by uvicorn's loop, as before
            if self.stopped_by is None:
                self.stopped_by = signum
            self.stop_asked.set()

        def restart_all(self) -> None:  # SIGHUP
            """uvicorn's rolling restart (each new worker serving before the old one leaves), after
            the model is loaded once, and given up at once when a stop is asked."""
            try:
                if not check_model_loads(settings, give_up=self.stop_asked.is_set):
                    return
            except Exception as err:  # noqa: BLE001 - any reason the model does not load: said, and no restart
                log.error("SIGHUP: no worker is replaced, the model does not load now: %s", one_line(str(err)))
                return
            for index, old in enumerate(self.processes):
                new = Process(self.config, self.sockets)
                new.start()
                if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.stop_asked):
                    new.kill()
                    new.join()
                    if not self.stop_asked.is_set():
                        log.error("SIGHUP: a new worker was not ready within %g s: the restart stops there, "
                                  "worker %s goes on serving", self.config.timeout_worker_healthcheck, old.pid)
                    return
                old.terminate()
                old.join()
                self.processes[index] = new

        def keep_subprocess_alive(self) -> None:
            """Not once a stop is asked: a stop that came during a rolling restart is handled on the
            loop's next turn, and this turn would ping workers that are shutting down (Ctrl-C to
            the process group reached them too), up to 60 s each, and start new ones."""
            if not self.stop_asked.is_set():
                super().keep_subprocess_alive()

        def terminate_all(self) -> None:  # called once, when the supervisor stops
            for sock in self.sockets:
                sock.close()  # new connections are refused from now on, not queued for nobody
            super().terminate_all()

    sock = config.bind_socket()  # (exits with uvicorn's startup failure status if it cannot)
    supervisor = Supervisor(config, sockets=[sock])
    try:
        supervisor.run()
    except KeyboardInterrupt:  # as uvicorn.run
        return signal.SIGINT
    finally:
        sock.close()
    return supervisor.stopped_by


def check_model_loads(settings: ServerSettings, give_up: Callable[[], bool] = lambda: False) -> bool:
    """Load the model once, as a worker loads it (checkpoint, runtime plan, warm-up), in a child
    process: raises the load's error, or returns True once it loaded (False: ``give_up()`` turned
    true first, and the child was stopped).

    Before the workers start, a missing or broken checkpoint, or a device, precision or token
    budget the model cannot run with, so stops `serve` with the one-line error a single worker
    gives (each worker answered 503 for ever, kept up by uvicorn's supervisor); before a rolling
    restart, it keeps the serving workers. In a child, so that the supervisor does not keep the
    model's memory; an ONNX export it makes is in the cache for the workers. Ctrl-C or SIGTERM
    meanwhile stops the child at once (the command waited for a whole export)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_load_as_a_worker, args=(settings.to_json(), sending), daemon=True,
                            name="structsent-model-check")
    child.start()
    sending.close()
    try:
        while not receiving.poll(0.1):
            if give_up():
                _stop_the_check(child)
                return False
        outcome = receiving.recv()  # None, or the load's typed error
    except EOFError:  # the child died without a word (killed, out of memory)
        child.join()
        from ..errors import StructsentError

        raise StructsentError(f"the model's check before the workers ended without an answer (exit status "
                             f"{child.exitcode}); run with --workers 1 to see the load's own error") from None
    except BaseException:  # Ctrl-C, SIGTERM
        _stop_the_check(child)
        raise
    finally:
        receiving.close()
    child.join()
    if outcome is not None:
        raise outcome
    return True


def _stop_the_check(child) -> None:
    child.terminate()
    child.join(10)


def _load_as_a_worker(settings_json: str, sending) -> None:
    from .service import load_classifier
    from .settings import ServerSettings

    try:
        load_classifier(ServerSettings.from_json(settings_json))
    except Exception as err:  # noqa: BLE001 - sent to the parent, which raises it
        sending.send(err)
    else:
        sending.send(None)


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    from .app import create_app
    from .logs import limit_server_logs
    from .settings import ServerSettings

    limit_server_logs()  # uvicorn has configured this process's loggers by now
    # SIGHUP sent to the process group (a terminal hung up) reaches the workers too, and its default
    # action ended each at once, cutting off its requests: it is the serve process's (a rolling restart).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = ServerSettings.from_json(os.environ[SETTINGS_ENVIRONMENT_VARIABLE])
    when_parent_ends(_stop_this_worker, name="structsent-supervisor-watch")
    return create_app(settings, serve_once_loaded=True)


def _stop_this_worker() -> None:
    """As SIGTERM stops it: requests in flight are finished, the listening socket closed."""
    log.warning("the serve process is gone: this worker stops")
    os.kill(os.getpid(), signal.SIGTERM)
