"""Accelerator telemetry (NVML through nvidia-ml-py), for progress lines and benchmarks.

Everything here degrades to None: no GPU, no driver or no nvidia-ml-py is not an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class GpuSnapshot:
    utilization: float  # share of the last sample period a kernel was running, 0..1
    memory_used: int  # bytes
    memory_total: int

    def describe(self) -> str:
        gib = 1 << 30
        return f"GPU {self.utilization:.0%} {self.memory_used / gib:.1f}/{self.memory_total / gib:.0f} GiB"


class NvmlDevice:
    """One CUDA device as NVML sees it; the one place structsent calls NVML."""

    def __init__(self, nvml: Any, handle: object) -> None:
        self._nvml = nvml  # the pynvml module
        self._handle = handle

    def snapshot(self) -> GpuSnapshot | None:
        """Utilisation and memory now, or None when NVML fails to answer."""
        try:
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except self._nvml.NVMLError:
            return None
        return GpuSnapshot(utilization=rates.gpu / 100.0, memory_used=int(memory.used), memory_total=int(memory.total))


def nvml_device(device: str) -> NvmlDevice | None:
    """NVML's view of the CUDA device ``device`` ('cuda', 'cuda:1'), or None: not CUDA, no
    nvidia-ml-py, or no driver."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        pynvml.nvmlInit()
        return NvmlDevice(pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))
    except pynvml.NVMLError:
        return None


def gpu_snapshot(device: str) -> GpuSnapshot | None:
    """Utilisation and memory of the CUDA device ``device`` ('cuda', 'cuda:1'), or None."""
    nvml = nvml_device(device)
    return None if nvml is None else nvml.snapshot()
