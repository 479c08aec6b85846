"""The one frozen configuration of an engine, built by the library, the CLI and the server."""

from __future__ import annotations

import dataclasses
import enum
import re

from .errors import ConfigError


class Backend(str, enum.Enum):
    """Which runtime executes the model."""

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"


class Precision(str, enum.Enum):
    """Numeric precision of the weights and activations."""

    AUTO = "auto"  # fp32 on CPU, fp16 on CUDA
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class LongTextPolicy(str, enum.Enum):
    """What to do with a text longer than the model's maximum length."""

    TRUNCATE = "truncate"  # keep the first max_length tokens, flag the result as truncated
    WINDOWS = "windows"  # score overlapping windows and average their probabilities


# Padded tokens per batch (longest x count). Small budgets win on CPU (cache-friendly GEMMs,
# little padding); GPUs want large batches to fill their cores.
DEFAULT_TOKEN_BUDGET = {"cpu": 4096, "cuda": 65536}
DEFAULT_MAX_BATCH_SIZE = {"cpu": 64, "cuda": 512}
# The fixed cost of one model call, in tokens' worth of compute, for the batch planner. On a CPU a
# call costs little (ONNX Runtime, bundled model: 0.6 ms for 8 tokens, ~70 us per token from 1x8 to
# 64x64), so the planner cuts where padding would cost more than a call; on a GPU batches are
# filled to the budget (None: greedy), where per-call overhead is large.
DEFAULT_BATCH_OVERHEAD_TOKENS = {"cpu": 32, "cuda": None}


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Everything that decides how texts are labelled.

    >>> EngineConfig(device="cpu").resolved_token_budget()
    4096
    """

    backend: Backend = Backend.AUTO
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    precision: Precision = Precision.AUTO
    token_budget: int | None = None  # padded tokens per batch; None: per-device default
    max_batch_size: int | None = None  # texts per batch; None: per-device default
    max_length: int = 512  # tokens per sequence, [CLS] and [SEP] included
    long_text: LongTextPolicy = LongTextPolicy.TRUNCATE
    window_stride: int | None = None  # tokens between window starts (WINDOWS); None: half a window
    num_threads: int | None = None  # CPU threads of the runtime; None: leave the runtime's default
    batch_overhead_tokens: int | None = None  # planner's cost of one call; None: per-device default
    # Pad every text to a multiple of this many tokens and batch equal padded lengths only: a
    # text's result then does not depend on what else is in its call (bit for bit on ONNX
    # Runtime CPU; `structsent label` uses 8). None: pad to the batch's longest text. CPU only:
    # on a GPU results depend on the batch shape anyway, and each length would cost a call.
    pad_multiple: int | None = None

    def __post_init__(self) -> None:
        for name, enum_type in (
            ("backend", Backend),
            ("precision", Precision),
            ("long_text", LongTextPolicy),
        ):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, name, enum_type(value))
                except ValueError:
                    choices = ", ".join(m.value for m in enum_type)
                    raise ConfigError(f"{name}={value!r}: expected one of {choices}") from None
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"device={self.device!r}: expected one of auto, cpu, cuda, cuda:N")
        if self.max_length < 3:
            raise ConfigError(f"max_length={self.max_length}: must be at least 3")
        if self.window_stride is None:
            object.__setattr__(self, "window_stride", max((self.max_length - 2) // 2, 1))
        if not 0 < self.window_stride <= self.max_length - 2:
            raise ConfigError(
                f"window_stride={self.window_stride}: must be in 1..max_length-2 ({self.max_length - 2})"
            )
        if self.token_budget is not None and self.token_budget < self.max_length:
            raise ConfigError(
                f"token_budget={self.token_budget}: must be at least max_length ({self.max_length})"
            )
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size={self.max_batch_size}: must be at least 1")
        if self.batch_overhead_tokens is not None and self.batch_overhead_tokens < 0:
            raise ConfigError(f"batch_overhead_tokens={self.batch_overhead_tokens}: must be at least 0")
        if self.pad_multiple is not None and self.pad_multiple < 1:
            raise ConfigError(f"pad_multiple={self.pad_multiple}: must be at least 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads={self.num_threads}: must be at least 1")

    @property
    def device_kind(self) -> str:
        """'cpu' or 'cuda' (after 'auto' is resolved by the engine)."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def resolved_token_budget(self) -> int:
        budget = self.token_budget or DEFAULT_TOKEN_BUDGET[self.device_kind]
        return max(budget, self.max_length)

    def resolved_max_batch_size(self) -> int:
        return self.max_batch_size or DEFAULT_MAX_BATCH_SIZE[self.device_kind]

    def resolved_batch_overhead(self) -> int | None:
        """The planner's per-call cost in tokens; None packs batches greedily to the budget."""
        if self.batch_overhead_tokens is not None:
            return self.batch_overhead_tokens
        return DEFAULT_BATCH_OVERHEAD_TOKENS[self.device_kind]

    def resolved_pad_multiple(self) -> int | None:
        return self.pad_multiple if self.device_kind == "cpu" else None

    def replace(self, **changes) -> "EngineConfig":
        return dataclasses.replace(self, **changes)
