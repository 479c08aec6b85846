"""Typed errors raised by the core. Adapters map them to exit codes or HTTP statuses."""

from __future__ import annotations


class StructsentError(Exception):
    """Base class of every error structsent raises on purpose."""


class ModelFormatError(StructsentError):
    """A model directory or file is missing, corrupt, or of an unsupported architecture."""


class ModelNotFoundError(StructsentError):
    """A model name is neither a local path nor reachable on a model hub."""


class BadInputError(StructsentError):
    """The input itself is unusable (wrong type, missing column, undecodable bytes...)."""


class NoSuchColumnError(BadInputError):
    """A column named by an option (the report's ``by``, ``text_column``) is not among a file's
    columns. The message names the option by its flag, ``--by``; a command whose own flag for
    that option differs says it with ``naming(flag)``."""

    def __init__(self, path: str, column: str, columns: list[str], *, option: str, flag: str) -> None:
        self.path, self.column, self.columns, self.option = path, column, list(columns), option
        super().__init__(self.naming(flag))

    def naming(self, flag: str) -> str:
        """The message with the option called ``flag``."""
        return f"{self.path}: no column {self.column!r} for {flag}; columns are: {', '.join(map(repr, self.columns))}"


class InputChangedError(BadInputError):
    """The input file was cut or rewritten while a job read it: its last rows are not the file's."""


class WorkAbandonedError(StructsentError):
    """Work stopped between model calls because no one waits for its answer any more (a server
    past its graceful shutdown): never a failure of the model or of the input."""


class ConfigError(StructsentError):
    """An option has a value that cannot work (unknown backend, budget too small...)."""


class UnusedSettingError(ConfigError):
    """A setting that the other settings leave unused (a window stride for texts that are truncated):
    refused, not silently ignored."""


class MissingExtraError(StructsentError, ImportError):
    """An optional dependency is not installed; the message names the `pip install` to run."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed. Install it with: pip install 'structsent[{extra}]'"
        )
        self.package = package
        self.extra = extra


class NotPicklableError(StructsentError, TypeError):
    """A loaded classifier was pickled or copied: it holds runtime sessions and threads that exist
    in its own process alone. A TypeError too, as pickle's own refusals are."""


class ModelOutputError(StructsentError):
    """The model gave no usable answer for an input (non-finite outputs): its fault, not the input's."""


class JobLockedError(StructsentError):
    """Another job is writing the same output (it holds the output's lock)."""


class OutputWriteError(StructsentError):
    """The output could not be written (disk full, I/O error); what was committed stays resumable.
    Also structsent's own cache when it cannot be used (not writable, an entry this user may not read)."""


class JobFilesChangedError(StructsentError):
    """Another program removed, replaced or wrote to a file the job is writing: what it had committed
    is no longer there as committed, so the job stops and cannot be resumed."""


class DeviceOutOfMemoryError(StructsentError):
    """The device ran out of memory on one batch (the engine splits the batch and retries)."""


class WorkerProcessError(StructsentError):
    """A helper process (tokenization) died; the job stops, and what was committed stays resumable."""


class OverloadedError(StructsentError):
    """More work was offered than can be queued (the server maps this to HTTP 429)."""


def require(module: str, extra: str):
    """Import an optional module, or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(module.split(".")[0], extra) from err
