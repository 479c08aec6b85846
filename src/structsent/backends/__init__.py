"""Runtimes behind one small interface; chosen by name in the EngineConfig.

A backend turns padded id arrays into float32 logits. It knows nothing about texts, batching
or labels, so adding one touches neither the batcher, the CLI nor the server.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..config import Backend as BackendName
from ..config import EngineConfig, Precision
from ..errors import ConfigError


class ModelRunner(Protocol):
    name: str
    device: str
    precision: str

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(batch, seq) int64 ids and mask -> (batch, num_labels) float32 logits."""
        ...


def create_runner(checkpoint, config: EngineConfig) -> ModelRunner:
    """Build the runner the config names for ``checkpoint``."""
    exported = getattr(checkpoint, "format", None) == "onnx"
    if config.backend is BackendName.ONNX or (config.backend is BackendName.AUTO and exported):
        from .onnx import OnnxRunner

        return OnnxRunner(checkpoint, config)
    if config.backend is BackendName.AUTO and not exported and _int8_on_cpu(config):
        # Measured (docs/BENCHMARKS.md): ONNX Runtime's fused int8 beats torch's dynamic int8 on CPU.
        from .onnx import onnx_int8_or_none

        runner = onnx_int8_or_none(checkpoint, config)
        if runner is not None:
            return runner
    if exported:
        raise ConfigError(f"{checkpoint.directory} holds an ONNX model, which only backend='onnx' runs")
    if config.backend in (BackendName.AUTO, BackendName.TORCH):
        from .torch import TorchRunner

        return TorchRunner(checkpoint, config)
    raise ConfigError(f"backend {config.backend.value!r} is not available for {checkpoint.directory}")


def _int8_on_cpu(config: EngineConfig) -> bool:
    return config.precision is Precision.INT8 and config.device in ("auto", "cpu")
