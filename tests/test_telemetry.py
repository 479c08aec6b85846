"""NVML telemetry, with a stand-in for nvidia-ml-py (the one thing a CPU machine cannot run)."""

import sys
import time
import types

import pytest

from structsent.bench.runners import GpuSampler
from structsent.telemetry import GpuSnapshot, gpu_snapshot


class FakeNVMLError(Exception):
    pass


def fake_pynvml(*, devices: int = 2, fail: str | None = None) -> types.ModuleType:
    """A pynvml module with ``devices`` GPUs; device i is 10*(i+1) % busy with i+1 GiB of 8 in use."""
    module = types.ModuleType("pynvml")
    module.NVMLError = FakeNVMLError

    def call(name, result):
        def function(*args):
            if fail == name:
                raise FakeNVMLError(name)
            return result(*args)
        return function

    def handle(index):
        if index >= devices:
            raise FakeNVMLError("invalid index")
        return index

    module.nvmlInit = call("nvmlInit", lambda: None)
    module.nvmlDeviceGetHandleByIndex = call("nvmlDeviceGetHandleByIndex", handle)
    module.nvmlDeviceGetUtilizationRates = call(
        "nvmlDeviceGetUtilizationRates", lambda h: types.SimpleNamespace(gpu=10 * (h + 1)))
    module.nvmlDeviceGetMemoryInfo = call(
        "nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(used=(h + 1) << 30, total=8 << 30))
    return module


def test_snapshot_reads_the_named_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    assert gpu_snapshot("cuda") == GpuSnapshot(utilization=0.1, memory_used=1 << 30, memory_total=8 << 30)
    second = gpu_snapshot("cuda:1")
    assert second == GpuSnapshot(utilization=0.2, memory_used=2 << 30, memory_total=8 << 30)
    assert second.describe() == "GPU 20% 2.0/8 GiB"


@pytest.mark.parametrize("fail", ["nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo"])
def test_snapshot_is_none_when_nvml_fails(monkeypatch, fail):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail=fail))
    assert gpu_snapshot("cuda:0") is None


def test_snapshot_is_none_without_cuda_nvml_or_the_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(devices=1))
    assert gpu_snapshot("cpu") is None  # NVML is not asked about a CPU
    assert gpu_snapshot("cuda:3") is None
    assert gpu_snapshot("cuda:0") is not None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed: import fails
    assert gpu_snapshot("cuda:0") is None


def test_bench_sampler_reads_through_the_same_nvml_access(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    with GpuSampler("cuda:1", interval_s=0.001) as sampler:
        deadline = time.monotonic() + 10
        while sampler.mean_utilisation is None and time.monotonic() < deadline:
            time.sleep(0.001)
    assert sampler.mean_utilisation == pytest.approx(20.0)
    assert sampler.peak_memory_mib == 2048.0
    with GpuSampler("cpu") as idle:
        pass
    assert idle.mean_utilisation is None and idle.peak_memory_mib is None
