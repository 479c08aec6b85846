"""Reaching Ray: importing it (or naming the extra), connecting to a cluster, sizing the actor pool
to its resources, and keeping Ray Data's logging and the command's signal handlers as the command needs them."""

from __future__ import annotations

import contextlib
import re
import sys
from typing import TYPE_CHECKING

from ..config import EngineConfig
from ..errors import ConfigError, require
from ..lines import one_line

if TYPE_CHECKING:
    pass


def import_ray():
    return require("ray", "ray")


def import_ray_data():
    return require("ray.data", "ray")


def configure_this_job(*, quiet: bool) -> None:
    context = import_ray_data().DataContext.get_current()
    context.enable_progress_bars = not quiet
    if hasattr(context, "raise_original_map_exception"):
        # Otherwise a typed error in an actor reaches the driver as text inside UserCodeException.
        context.raise_original_map_exception = True
    import logging

    data_logger = logging.getLogger("ray.data")
    if quiet:  # a failed task is logged with its whole traceback; the command says why in one line
        data_logger.setLevel(logging.CRITICAL)
        return
    # Ray's progress stays on the terminal, its failure records (a task's tracebacks, three of them
    # before the command's one line for a JSON Lines line without the text field) go to its session
    # logs alone: the command says why in one line.
    for handler in data_logger.handlers:
        if getattr(handler, "stream", None) is sys.stderr and _below_error not in handler.filters:
            handler.addFilter(_below_error)


def _below_error(record) -> bool:
    import logging

    return record.levelno < logging.ERROR


def actor_pool_for(ray, config: EngineConfig) -> dict:
    """Actors for the whole cluster: one per GPU, else one per CPU but one (left for reads and writes);
    on a cluster of one CPU, one actor that reserves none (it shares the CPU with the reads)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if config.device.startswith("cuda") and gpus == 0:  # Ray would wait for one for ever
        raise ConfigError(f"--device {config.device}: the Ray cluster has no GPU; use --device cpu (or auto)")
    wants_gpu = config.device.startswith("cuda") or (config.device == "auto" and gpus > 0)
    if wants_gpu:
        return {"concurrency": max(gpus, 1), "num_gpus": 1}
    cpus = int(resources.get("CPU", 1))
    if cpus < 2:  # one actor holding the only CPU would leave none to the reads: the job would wait for ever
        return {"concurrency": 1, "num_cpus": 0}
    return {"concurrency": cpus - 1, "num_cpus": 1}


@contextlib.contextmanager
def _signal_handlers_kept():
    """The SIGTERM handler in place before ``ray.init`` kept after it: Ray's core worker installs a
    failure handler that dumps a native stack and aborts (exit 134), where the command's own
    handler stops the job and removes what it wrote. In the main thread only (where handlers live)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class connected:
    """Connect to ``address`` (None: RAY_ADDRESS if set, else a new local Ray) unless already connected."""

    def __init__(self, address: str | None, *, quiet: bool = False) -> None:
        self.address = address
        self.quiet = quiet
        self.started = False

    def __enter__(self):
        import logging

        ray = import_ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            try:
                with _signal_handlers_kept():
                    ray.init(address=self.address, logging_level=logging.WARNING if self.quiet else logging.INFO,
                             log_to_driver=not self.quiet)
            except ConnectionError as err:
                raise ConfigError(f"cannot reach the Ray cluster at {self.address}: {err}") from err
            except ValueError as err:  # "Invalid address format"
                raise ConfigError(f"--ray-address {self.address}: {err} (expected host:port, ray://host:port "
                                  "or auto)") from err
            except RuntimeError as err:  # a scheme Ray knows no module for (rya://): "Module: rya does not exist"
                if "://" not in (self.address or ""):
                    raise
                said = one_line(str(err).splitlines()[0] if str(err).strip() else type(err).__name__)
                raise ConfigError(f"--ray-address {self.address}: {said} (expected host:port, ray://host:port "
                                  "or auto)") from err
            self.started = True
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            import_ray().shutdown()


def check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``host:port`` or ``ray://host:port`` nobody listens on (Ray itself retries for minutes)."""
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address or "")
    if match is None:
        return  # None, "auto", or a scheme Ray resolves itself
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from err
