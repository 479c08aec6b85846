"""The server's own typed errors, and every typed error's HTTP status and ``error_type``: the one
place errors become statuses."""

from __future__ import annotations

from ..errors import BadInputError, ModelOutputError, OverloadedError, StructsentError
from .batcher import BatchFailedError, WorkerStoppedError


class LimitExceededError(BadInputError):
    """A request is larger than a configured limit (HTTP 413); ``limit`` names it, as in /info."""

    def __init__(self, message: str, *, limit: str, limit_value: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.limit_value = limit_value


class ModelNotReadyError(StructsentError):
    """The model is still loading, failed to load, or the server is shutting down (HTTP 503)."""


class ClientDisconnectedError(StructsentError):
    """The client went away before its result was ready; its work was dropped."""


# Typed errors -> (HTTP status, error_type). Looked up along the error's MRO, most specific first.
ERROR_STATUSES: dict[type[BaseException], tuple[int, str]] = {
    LimitExceededError: (413, "validation"),
    BadInputError: (422, "validation"),
    OverloadedError: (429, "overloaded"),
    ModelNotReadyError: (503, "unhealthy"),
    WorkerStoppedError: (503, "unhealthy"),
    BatchFailedError: (500, "backend"),
    ModelOutputError: (500, "backend"),
}


def status_of(err: BaseException) -> tuple[int, str]:
    for kind in type(err).__mro__:
        if kind in ERROR_STATUSES:
            return ERROR_STATUSES[kind]
    return 500, "backend"


def error_type_of_status(status: int) -> str:
    """The error type of an HTTP error raised by the framework (unknown route, wrong method...)."""
    return {401: "unauthorized", 408: "timeout", 429: "overloaded", 503: "unhealthy"}.get(
        status, "validation" if status < 500 else "backend"
    )
