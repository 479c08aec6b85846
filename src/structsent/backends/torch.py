"""PyTorch runtime: CPU (fp32, bf16, dynamic int8) and CUDA (fp16/bf16, pinned memory, async copies)."""

from __future__ import annotations

import numpy as np
import torch

from ..config import EngineConfig, Precision
from ..errors import ConfigError, DeviceOutOfMemoryError
from ..modeling import BertClassifier, from_hf_state_dict

_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {requested!r}: CUDA is not available (no GPU, or a CPU-only build of torch); "
            "use device='cpu' or install a CUDA build of torch"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {requested!r}: only 'cpu' and 'cuda[:N]' are supported")
    return device


def resolve_precision(requested: Precision, device: torch.device) -> Precision:
    if requested is Precision.AUTO:
        return Precision.FP16 if device.type == "cuda" else Precision.FP32
    if requested is Precision.INT8 and device.type != "cpu":
        raise ConfigError("precision int8 runs on the CPU only; use fp16 or bf16 on CUDA")
    if requested is Precision.BF16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bf16; use precision='fp16'")
    return requested


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (else bf16 is emulated and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class TorchRunner:
    """Runs a BertClassifier on one device at one precision."""

    name = "torch"

    def __init__(self, checkpoint, config: EngineConfig) -> None:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self._device = resolve_device(config.device)
        self._precision = resolve_precision(config.precision, self._device)
        self.model = build_model(checkpoint, self._precision, self._device)
        self._pinned: torch.Tensor | None = None

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def precision(self) -> str:
        return self._precision.value

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            try:
                ids, mask = self._to_device(input_ids), self._to_device(attention_mask, offset=1)
                logits = self.model(ids, mask)
                return logits.float().cpu().numpy()
            except torch.cuda.OutOfMemoryError as err:
                raise DeviceOutOfMemoryError(
                    f"out of device memory on a batch of {input_ids.shape[0]} x {input_ids.shape[1]} tokens"
                ) from err

    def _to_device(self, array: np.ndarray, *, offset: int = 0) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self._device.type != "cuda":
            return tensor
        # Reused pinned staging memory: the copy runs asynchronously, and the buffer is free
        # again once run() has read the logits back (a synchronising copy).
        staging = self._staging(array.size, slot=offset)
        staging.copy_(tensor.view(-1))
        return staging.view(array.shape).to(self._device, non_blocking=True)

    def _staging(self, size: int, *, slot: int) -> torch.Tensor:
        if self._pinned is None or self._pinned.shape[1] < size:
            self._pinned = torch.empty((2, max(size, 1 << 16)), dtype=torch.int64).pin_memory()
        return self._pinned[slot, :size]


def build_model(checkpoint, precision: Precision, device: torch.device) -> torch.nn.Module:
    model = BertClassifier(checkpoint.shape)
    weights = from_hf_state_dict(checkpoint.state_dict, checkpoint.shape.num_layers)
    model.load_state_dict(weights, strict=True)
    model.eval().requires_grad_(False)
    if precision is Precision.INT8:
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(device=device, dtype=_DTYPES[precision])
