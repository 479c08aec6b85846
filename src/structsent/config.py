"""The one frozen configuration of an engine, built by the library, the CLI and the server."""

from __future__ import annotations

import dataclasses
import enum
import numbers
import re

from .errors import ConfigError, UnusedSettingError


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


# What int8 computes, by name (the recipe of structsent.int8 and the ONNX export): a label job's
# fingerprint carries it, so that a job begun under another recipe is not resumed with other numbers.
# Change it whenever int8's outputs change.
INT8_RECIPE = "smoothed-0.8/1"


class LongTextPolicy(str, enum.Enum):
    """What to do with a text longer than the model's maximum length."""

    TRUNCATE = "truncate"  # keep the first max_length tokens, flag the result as truncated
    WINDOWS = "windows"  # score overlapping windows and average their probabilities


class Attention(str, enum.Enum):
    """How attention sees a batch of texts of different lengths."""

    AUTO = "auto"  # packed with the torch backend (CUDA fp16/bf16 where the varlen kernel runs; CPU), else padded
    PADDED = "padded"  # every text padded to the batch's longest, masked
    PACKED = "packed"  # no padding: the texts as one token stream with cumulative lengths (torch)


# Padded tokens per batch (longest x count). Small budgets win on CPU (cache-friendly GEMMs,
# little padding); GPUs want large batches to fill their cores.
DEFAULT_TOKEN_BUDGET = {"cpu": 4096, "cuda": 65536}
DEFAULT_MAX_BATCH_SIZE = {"cpu": 64, "cuda": 512}
# The fixed cost of one model call, in tokens' worth of compute, for the batch planner. On a CPU a
# call costs little (ONNX Runtime, bundled model: 0.6 ms for 8 tokens, ~70 us per token from 1x8 to
# 64x64), so the planner cuts where padding would cost more than a call; on a GPU batches are
# filled to the budget (None: greedy), where per-call overhead is large.
DEFAULT_BATCH_OVERHEAD_TOKENS = {"cpu": 32, "cuda": None}


def _setting(default, help_text: str):
    """A field with its one-line help, shown by every command-line flag generated from it."""
    return dataclasses.field(default=default, metadata={"help": help_text})


# [0-9]: \d matches every script's digits; no leading zero and at most 4 digits, as torch parses them
_DEVICE = re.compile(r"auto|cpu|cuda(:(0|[1-9][0-9]{0,3}))?")

# The largest value an integer setting may take: a C int, which every runtime takes them as.
MAX_INT = 2**31 - 1
# More threads than this is a typo, not a machine: ONNX Runtime would try to create them all
# (memory growing without end) and torch overflows past a C int.
MAX_THREADS = 1024
# (lowest, highest) of each integer setting; window_stride is also checked against max_length,
# and token_budget (by plan_for) against the length the model takes.
_INTEGER_BOUNDS = {
    "token_budget": (3, MAX_INT),
    "max_batch_size": (1, MAX_INT),
    "max_length": (3, MAX_INT),
    "window_stride": (1, MAX_INT),
    "num_threads": (0, MAX_THREADS),
    "batch_overhead_tokens": (0, MAX_INT),
    "pad_multiple": (1, MAX_INT),
}
_OPTIONAL_INTEGERS = frozenset(_INTEGER_BOUNDS) - {"max_length"}


def check_integer(name: str, value, low: int, high: int, *, optional: bool = False) -> int | None:
    """``value`` as a plain int, or a ConfigError unless it is an integer in low..high (or None
    where optional).

    Integer types of other libraries (numpy's) are taken as their value. bool is refused although
    Python counts it an int (``num_threads=True`` is a mistake), and so are floats, even whole
    ones: a budget of 4096.5 or nan has no meaning.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={value!r}: expected an integer in {low}..{high}")
    number = int(value)
    if not low <= number <= high:
        raise ConfigError(f"{name}={number}: must be in {low}..{high}")
    return number



@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Everything that decides how texts are labelled.

    >>> EngineConfig(device="cpu").resolved_token_budget()
    4096
    """

    def __new__(cls, *args: object, **options: object) -> "EngineConfig":
        """Options by name only, each an EngineConfig field: the generated __init__ said otherwise
        with Python's bare TypeError (``load`` and ``replace`` already said ConfigError)."""
        if args:
            raise ConfigError(f"EngineConfig takes its options by name (got {len(args)} positional); "
                              "e.g. EngineConfig(device='cpu')")
        check_option_names(options)
        return super().__new__(cls)

    backend: Backend = _setting(Backend.AUTO, "runtime: auto (ONNX Runtime on CPU when installed, else torch), torch, onnx")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    precision: Precision = _setting(Precision.AUTO, "auto: fp32 on CPU, fp16 on CUDA")
    token_budget: int | None = _setting(None, "padded tokens per batch (default: 4096 on CPU, probed from free memory on CUDA)")
    max_batch_size: int | None = _setting(None, "texts per batch at most (default: 64 on CPU, 512 on CUDA)")
    max_length: int = _setting(512, "tokens per text, [CLS] and [SEP] included")
    long_text: LongTextPolicy = _setting(LongTextPolicy.TRUNCATE,
                                         "a text over max_length: truncate it, or score overlapping windows")
    window_stride: int | None = _setting(None, "tokens between window starts with long_text=windows (default: half a window)")
    num_threads: int | None = _setting(None, "CPU threads of the runtime, 0..1024 (default and 0: the runtime's own; "
                                                "serve --model-workers N divides the cores among them); with the "
                                                "torch backend PyTorch's count for the whole process")
    batch_overhead_tokens: int | None = _setting(
        None, "the planner's cost of one model call, in tokens (default: 32 on CPU; on CUDA batches are filled; "
              "packed attention fills batches in real tokens and does not use it)")
    # A text's result then does not depend on what else is in its call: bit for bit on ONNX
    # Runtime CPU. CPU only: on a GPU results depend on the batch shape anyway.
    pad_multiple: int | None = _setting(
        None, "pad texts to a multiple of N tokens and batch equal lengths only (CPU; default: off, label: 8)")
    attention: Attention = _setting(
        Attention.AUTO, "auto (packed with the torch backend: on CUDA in fp16/bf16 where the varlen flash kernel "
                        "runs, on the CPU unless pad_multiple is set), padded, packed (no padding computed; torch)")

    def __post_init__(self) -> None:
        for name, enum_type in (
            ("backend", Backend),
            ("precision", Precision),
            ("long_text", LongTextPolicy),
            ("attention", Attention),
        ):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, name, enum_type(value))
                except (ValueError, TypeError):
                    choices = ", ".join(m.value for m in enum_type)
                    raise ConfigError(f"{name}={value!r}: expected one of {choices}") from None
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"device={self.device!r}: expected one of auto, cpu, cuda, cuda:N")
        # Types and bounds first, so that the checks between fields below compare plain ints.
        for name, (low, high) in _INTEGER_BOUNDS.items():
            value = check_integer(name, getattr(self, name), low, high, optional=name in _OPTIONAL_INTEGERS)
            object.__setattr__(self, name, value)
        stride = self.window_stride  # None: half the window the model can take (the plan knows its positions)
        if stride is not None and not 0 < stride <= self.max_length - 2:
            raise ConfigError(
                f"window_stride={stride}: must be in 1..max_length-2 ({self.max_length - 2})"
            )
        if stride is not None and self.long_text is not LongTextPolicy.WINDOWS:
            raise UnusedSettingError(f"window_stride={stride}: applies only with long_text=windows (with long_text="
                                     f"{self.long_text.value} no text is cut into windows)")
        # token_budget against max_length is the plan's check: it needs the model's positions
        # (max_length=100000 with a 512-position model takes texts of 512 tokens).

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
        check_option_names(changes)
        return dataclasses.replace(self, **changes)


def check_option_names(options: dict) -> None:
    """Options given by name (``load(..., **options)``, ``replace``) that are EngineConfig fields,
    or a ConfigError naming the others and the fields (rather than Python's bare TypeError)."""
    fields = [field.name for field in dataclasses.fields(EngineConfig)]
    unknown = [name for name in options if name not in fields]
    if unknown:
        raise ConfigError(f"unknown engine option {', '.join(map(repr, unknown))}; the options are: {', '.join(fields)}")
