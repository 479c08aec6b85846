"""Accelerator telemetry (NVML through nvidia-ml-py), for progress lines and benchmarks.

Everything here degrades to None: no GPU, no driver or no nvidia-ml-py is not an error.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GpuSnapshot:
    utilization: float  # share of the last sample period a kernel was running, 0..1
    memory_used: int  # bytes
    memory_total: int

    def describe(self) -> str:
        gib = 1 << 30
        return f"GPU {self.utilization:.0%} {self.memory_used / gib:.1f}/{self.memory_total / gib:.0f} GiB"


def gpu_snapshot(device: str) -> GpuSnapshot | None:
    """Utilisation and memory of the CUDA device ``device`` ('cuda', 'cuda:1'), or None."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    except pynvml.NVMLError:
        return None
    return GpuSnapshot(utilization=rates.gpu / 100.0, memory_used=int(memory.used), memory_total=int(memory.total))
