"""The server's settings, resolved once: ``ServerSettings`` (everything but host and port, checked when
built) and what they decide of the engine (its threads divided among the model workers; one worker on a GPU)."""

from __future__ import annotations

import dataclasses
import json
import math

from ..config import EngineConfig, check_integer
from ..errors import ConfigError

MAX_WAIT_MS_LIMIT = 60_000  # a merge window of a minute already delays every lone request by a minute
MIN_HEADER_BYTES = 1024  # below, requests of probes and browsers would be refused (431) one and all
MAX_MODEL_WORKERS = 64  # model calls at once; more is a typo, not a machine


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything the server needs besides host and port."""

    model: str = "default"
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_text_chars: int = 20_000
    max_queue: int = 4096
    max_wait_ms: float = 0.0
    max_connections: int = 256
    read_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    api_key: str | None = dataclasses.field(default=None, repr=False)  # never in /info nor a log
    page: bool = True  # GET / from a browser serves the page (page.py)
    # Model calls at once (the batcher's worker threads), the CPU cores divided among them unless
    # engine.num_threads is set. Two: +11% at 64 clients on 2 cores, a lone request a quarter slower (docs/SERVER.md).
    model_workers: int = 1

    def __post_init__(self) -> None:
        check_integer("model_workers", self.model_workers, 1, MAX_MODEL_WORKERS)
        if self.engine.device_kind == "cuda":
            check_one_model_worker_on_a_gpu(self.model_workers)
        for name in ("max_body_bytes", "max_texts", "max_text_chars", "max_queue", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.max_header_bytes < MIN_HEADER_BYTES:  # every request refused, /health's too: never ready
            raise ConfigError(f"max_header_bytes={self.max_header_bytes}: must be at least {MIN_HEADER_BYTES} (a "
                              "browser's request headers alone take several hundred bytes)")
        # NaN passes every comparison and infinity reaches timers and /info (not JSON): refuse both.
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= MAX_WAIT_MS_LIMIT):
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be a number of milliseconds in 0..{MAX_WAIT_MS_LIMIT}")
        if not (math.isfinite(self.read_timeout_s) and self.read_timeout_s > 0):
            raise ConfigError(f"read_timeout_s={self.read_timeout_s}: must be a finite number of seconds > 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty: give a key, or none for a server without authentication")
        if self.api_key is not None and not all("!" <= char <= "~" for char in self.api_key):
            raise ConfigError("the API key must be printable ASCII without spaces (clients and browsers send other "
                              "characters in other encodings, or not at all, so it could never match)")
        if self.max_texts > self.max_queue:
            raise ConfigError(
                f"max_texts={self.max_texts} > max_queue={self.max_queue}: a full request could never be queued"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerSettings":
        fields = json.loads(text)
        return cls(**{**fields, "engine": EngineConfig(**fields["engine"])})


def engine_config_for(settings: ServerSettings) -> EngineConfig:
    """The engine's settings, the CPU threads divided among the model workers unless
    ``num_threads`` is set (then each call has that many)."""
    from ..runtime import usable_cores

    if settings.model_workers == 1 or settings.engine.num_threads:
        return settings.engine
    return settings.engine.replace(num_threads=max(1, usable_cores() // settings.model_workers))


def model_workers_on(settings: ServerSettings, device: str) -> int:
    """The model workers for a model loaded on ``device``: more than one is refused on a GPU
    (``device`` 'auto' may find one after the settings were checked)."""
    if device.startswith("cuda"):
        check_one_model_worker_on_a_gpu(settings.model_workers)
    return settings.model_workers


def check_one_model_worker_on_a_gpu(model_workers: int) -> None:
    """A GPU takes one model call at a time: the calls would queue on the device anyway, and the
    runner's staging buffers for the copies to it serve one call."""
    if model_workers > 1:
        raise ConfigError(f"model_workers={model_workers}: on a GPU the model takes one call at a time (for more "
                          "throughput there, larger batches: --max-batch-size, --batch-tokens)")
