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
    if config.backend is BackendName.AUTO and not exported and _onnx_preferred(config):
        # Measured (docs/BENCHMARKS.md): on CPU, ONNX Runtime's fused graph is the fastest exact
        # path (fp32, same probabilities as torch to 1e-5) and its int8 beats torch's int8.
        from .onnx import onnx_or_none

        runner = onnx_or_none(checkpoint, config)
        if runner is not None:
            return runner
    if exported:
        raise ConfigError(f"{checkpoint.directory} holds an ONNX model, which only backend='onnx' runs")
    if config.backend in (BackendName.AUTO, BackendName.TORCH):
        from .torch import TorchRunner

        return TorchRunner(checkpoint, config)
    raise ConfigError(f"backend {config.backend.value!r} is not available for {checkpoint.directory}")


def _onnx_preferred(config: EngineConfig) -> bool:
    """backend='auto' runs ONNX Runtime for fp32 and int8 on the CPU."""
    if config.precision not in (Precision.AUTO, Precision.FP32, Precision.INT8):
        return False
    if config.device == "cpu":
        return True
    if config.device == "auto":
        import torch

        return not torch.cuda.is_available()
    return False
