"""Runtimes behind one small interface; chosen by name in the EngineConfig.

A backend turns padded id arrays into float32 logits. It knows nothing about texts, batching
or labels, so adding one touches neither the batcher, the CLI nor the server.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..config import Backend as BackendName
from ..config import EngineConfig
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
    if config.backend in (BackendName.AUTO, BackendName.TORCH):
        from .torch import TorchRunner

        return TorchRunner(checkpoint, config)
    raise ConfigError(f"backend {config.backend.value!r} is not available for {checkpoint.directory}")
