"""ONNX Runtime: fp32 or dynamic int8 graphs on the CPU, fp32 on CUDA when the provider is present.

A directory written by ``structsent export`` runs as it is. Any other checkpoint is exported on
first use (fused by ONNX Runtime's BERT optimizer) into the export cache, so later loads start
from the cached graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import EngineConfig, Precision
from ..errors import ConfigError, DeviceOutOfMemoryError, MissingExtraError, require

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    ort = require("onnxruntime", "onnx")
    return list(ort.get_available_providers())


def resolve_device(requested: str, precision: Precision = Precision.AUTO) -> str:
    """'cpu' or 'cuda:N' from what the config asks and what ONNX Runtime offers."""
    has_cuda = CUDA_PROVIDER in available_providers()
    if requested == "auto":
        return "cuda:0" if has_cuda and precision is not Precision.INT8 else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not has_cuda:
            raise ConfigError(
                f"device {requested!r}: this onnxruntime has no CUDAExecutionProvider; install "
                "onnxruntime-gpu, or use device='cpu' or backend='torch'"
            )
        return requested if ":" in requested else "cuda:0"
    raise ConfigError(f"device {requested!r}: only 'cpu' and 'cuda[:N]' are supported")


def resolve_precision(requested: Precision, checkpoint, device: str) -> Precision:
    """The precision of the graph to run: an exported directory's own, else fp32 or int8."""
    exported = getattr(checkpoint, "format", None) == "onnx"
    if exported:
        own = Precision(checkpoint.precision)
        if requested not in (Precision.AUTO, own):
            raise ConfigError(
                f"{checkpoint.directory} holds a {own.value} ONNX model; precision={requested.value!r} "
                "needs another export (structsent export SOURCE_MODEL --int8 ...)"
            )
        precision = own
    elif requested is Precision.AUTO:
        precision = Precision.FP32
    elif requested in (Precision.FP32, Precision.INT8):
        precision = requested
    else:
        raise ConfigError(
            f"precision {requested.value!r} is not offered by the onnx backend (fp32, int8); "
            "use backend='torch' for bf16/fp16"
        )
    if precision is Precision.INT8 and device != "cpu":
        raise ConfigError("int8 ONNX models run on the CPU only; use device='cpu'")
    return precision


def model_file_for(checkpoint, precision: Precision) -> Path:
    """The ONNX file to open: the directory's own, or the cached export of the checkpoint."""
    if getattr(checkpoint, "format", None) == "onnx":
        return Path(checkpoint.model_file)
    from ..onnx.cache import cached_export
    from ..onnx.export import ExportOptions
    from ..models.onnx import MODEL_FILE

    return cached_export(checkpoint, ExportOptions(precision=precision, optimize=True)) / MODEL_FILE


def session_options(config: EngineConfig):
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config.num_threads:
        options.intra_op_num_threads = config.num_threads
    options.inter_op_num_threads = 1  # one batch at a time: parallelism lives inside the operators
    options.log_severity_level = 3  # the fused graph triggers harmless shape-inference warnings
    return options


class OnnxRunner:
    """Runs an ONNX BERT classifier with ONNX Runtime."""

    name = "onnx"

    def __init__(self, checkpoint, config: EngineConfig) -> None:
        ort = require("onnxruntime", "onnx")
        self._device = resolve_device(config.device, config.precision)
        self._precision = resolve_precision(config.precision, checkpoint, self._device)
        self.model_file = model_file_for(checkpoint, self._precision)
        self.session = ort.InferenceSession(
            str(self.model_file), sess_options=session_options(config), providers=self._providers()
        )
        self._inputs = {i.name for i in self.session.get_inputs()}

    @property
    def device(self) -> str:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision.value

    def _providers(self) -> list:
        if self._device == "cpu":
            return [CPU_PROVIDER]
        device_id = int(self._device.split(":")[1])
        return [(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:  # graphs exported by other tools
            feed["token_type_ids"] = np.zeros_like(input_ids)
        try:
            (logits,) = self.session.run(["logits"], feed)
        except Exception as err:  # onnxruntime raises its own untyped errors
            if "memory" in str(err).lower() and self._device != "cpu":
                raise DeviceOutOfMemoryError(
                    f"out of device memory on a batch of {input_ids.shape[0]} x {input_ids.shape[1]} tokens"
                ) from err
            raise
        return np.asarray(logits, dtype=np.float32)


def onnx_or_none(checkpoint, config: EngineConfig) -> OnnxRunner | None:
    """The ONNX runner that ``backend='auto'`` prefers on CPU, or None where it cannot be had
    (onnxruntime or onnx not installed, the export cache not writable): torch then runs."""
    try:
        return OnnxRunner(checkpoint, config.replace(device="cpu"))
    except MissingExtraError:
        return None
    except OSError as err:
        log.warning("ONNX export unavailable (%s); running torch instead", err)
        return None
