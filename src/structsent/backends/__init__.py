"""Runtimes behind one small interface; which one runs is decided by the RuntimePlan.

A backend turns padded id arrays into float32 logits. It knows nothing about texts, batching
or labels, so adding one touches neither the batcher, the CLI nor the server. It resolves
nothing either: device, precision, threads and the graph to open come from the plan.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import Backend
from ..plan import RuntimePlan


@runtime_checkable
class ModelRunner(Protocol):
    """What the engine needs of a runtime: one batch in, its logits out."""

    name: str

    @property
    def device(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(batch, seq) int64 ids and mask -> (batch, num_labels) float32 logits."""
        ...


@runtime_checkable
class PipelinedRunner(ModelRunner, Protocol):
    """A runner whose ``run`` splits into stage -> launch -> fetch, so that the engine can copy
    and launch batch i+1 while the device still computes batch i (``fetch`` is the only wait)."""

    def stage(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any: ...

    def launch(self, staged: Any) -> Any: ...

    def fetch(self, launched: Any) -> np.ndarray: ...


def create_runner(checkpoint, plan: RuntimePlan) -> ModelRunner:
    """Build the runner the plan names for ``checkpoint``."""
    if plan.backend is Backend.ONNX:
        from .onnx import OnnxRunner

        return OnnxRunner(plan)
    from .torch import TorchRunner

    return TorchRunner(checkpoint, plan)
