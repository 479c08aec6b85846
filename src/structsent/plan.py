"""The runtime plan: every decision about how one checkpoint runs, made once.

``runtime.resolve_runtime`` fills it from config + checkpoint + host (which backend, device and
precision, whether to export to ONNX first); ``plan_for`` turns those three choices and the
config into the sizes every consumer reads (token budget, batch cap, planner overhead, padding
multiple, lengths). The engine, the backends, the server, bench and the Ray actors read the
plan; none derives a number again.

>>> from structsent.config import Backend, EngineConfig, Precision
>>> plan = plan_for(EngineConfig(), backend=Backend.TORCH, device="cpu", precision=Precision.FP32,
...                 max_positions=512)
>>> plan.token_budget, plan.max_batch_size, plan.batch_overhead_tokens
(4096, 64, 32)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import Backend, EngineConfig, LongTextPolicy, Precision
from .errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimePlan:
    backend: Backend  # torch or onnx, never auto
    device: str  # "cpu" or "cuda:N"
    precision: Precision  # never auto
    max_length: int  # tokens per sequence, within the model's positions
    long_text: LongTextPolicy
    window_stride: int
    token_budget: int  # padded tokens per batch (on CUDA without a set budget: the ceiling to probe from)
    probe_token_budget: bool  # CUDA, no budget set: the engine lowers the budget to what fits in memory
    max_batch_size: int
    batch_overhead_tokens: int | None  # the planner's per-call cost; None: greedy batches
    pad_multiple: int | None
    num_threads: int | None
    packed: bool = False  # attention over packed texts, no padding (torch on CUDA; checked at load)
    packed_required: bool = False  # attention=packed asked for explicitly: a failed load check is an error
    model_file: Path | None = None  # the ONNX graph to run (exported directory or the export cache)

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def replace(self, **changes) -> "RuntimePlan":
        return dataclasses.replace(self, **changes)


def plan_for(config: EngineConfig, *, backend: Backend, device: str, precision: Precision, max_positions: int,
             model_file: Path | None = None) -> RuntimePlan:
    """The sizes that follow from ``config`` once backend, device and precision are chosen."""
    max_length = min(config.max_length, max_positions)
    if config.token_budget is not None and config.token_budget < max_length:
        capped = ", the model's positions" if max_length < config.max_length else ""
        raise ConfigError(f"token_budget={config.token_budget}: must be at least max_length ({max_length}{capped})")
    # Unset: half the window actually used (max_length clamped to the model's positions), not half
    # of a requested max_length the model cannot take.
    window_stride = min(config.window_stride or max((max_length - 2) // 2, 1), max_length - 2)
    given_stride = None if config.window_stride is None else window_stride  # (one set is cut to the window)
    sized = config.replace(device="cuda" if device.startswith("cuda") else "cpu", max_length=max_length,
                           window_stride=given_stride)
    return RuntimePlan(
        backend=backend,
        device=device,
        precision=precision,
        max_length=max_length,
        long_text=config.long_text,
        window_stride=window_stride,
        token_budget=sized.resolved_token_budget(),
        probe_token_budget=sized.device_kind == "cuda" and config.token_budget is None,
        max_batch_size=sized.resolved_max_batch_size(),
        batch_overhead_tokens=sized.resolved_batch_overhead(),
        pad_multiple=sized.resolved_pad_multiple(),
        num_threads=config.num_threads,
        model_file=model_file,
    )
