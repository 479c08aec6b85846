"""ONNX Runtime: fp32 or dynamic int8 graphs on the CPU, fp32 on CUDA when the provider is present.

The graph to open is the plan's: a directory written by ``structsent export``, or the checkpoint
exported on first use into the cache (decided in ``structsent.runtime``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Precision
from ..errors import DeviceOutOfMemoryError, ModelFormatError, require
from ..lines import is_utf8_text
from ..plan import RuntimePlan

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def session_options(plan: RuntimePlan):
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if plan.num_threads:
        options.intra_op_num_threads = plan.num_threads
    options.inter_op_num_threads = 1  # one batch at a time: parallelism lives inside the operators
    # Idle pool threads sleep instead of spinning between operators: spinning bought no
    # throughput in one process here and burnt the cores a server's HTTP side needs (a
    # 2-core server at 64 clients: ~35% less model CPU per request, ~30% more requests/s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # the fused graph triggers harmless shape-inference warnings
    return options


# The onnxruntime error types that mean "this file is not a loadable model" (not a provider fault).
_UNREADABLE_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "InvalidArgument")


def is_unreadable_model_error(err: Exception) -> bool:
    return type(err).__name__ in _UNREADABLE_MODEL_ERRORS or "Load model from" in str(err)


def unreadable_reason(err: Exception) -> str:
    """onnxruntime's reason, one line: '[ONNXRuntimeError] : 7 : ... failed:Protobuf parsing failed.'"""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rsplit("failed:", 1)[-1].strip() or text


FED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # token_type_ids: zeros, where a graph has it


def check_classifier_signature(session, model_file) -> None:
    """Refuse, with one line naming the file, a graph this runner cannot feed or read: inputs other
    than int64 (batch, sequence) ids and mask (and token types), no 'logits' output of rank 2, or a
    fixed batch or sequence size (onnxruntime failed on them mid-job, with its own traceback)."""
    inputs = {i.name: i for i in session.get_inputs()}
    problems = [f"it lacks the input {name!r}" for name in FED_INPUTS[:2] if name not in inputs]
    problems += [f"it has an input {name!r} that is not fed" for name in inputs if name not in FED_INPUTS]
    for name in FED_INPUTS:
        if name in inputs:
            problems += _tensor_problems(inputs[name], "input", dims=("batch", "sequence"))
    logits = next((o for o in session.get_outputs() if o.name == "logits"), None)
    if logits is None:
        problems.append(f"it has no output named 'logits' (its outputs: {', '.join(o.name for o in session.get_outputs())})")
    else:
        problems += _tensor_problems(logits, "output", dims=("batch", None))
    if problems:
        raise ModelFormatError(
            f"{model_file}: not a text classifier structsent can run: {'; '.join(problems)}; export the model "
            "with structsent export MODEL -o DIR, or with inputs input_ids and attention_mask (int64, dynamic "
            "batch and sequence) and an output logits (batch, labels)"
        )


def _tensor_problems(arg, kind: str, *, dims: tuple) -> list[str]:
    """What is wrong with one input or output of a graph (``dims``: the axes that must be dynamic, by name)."""
    problems = []
    if kind == "input" and arg.type != "tensor(int64)":  # outputs of any float type are read as float32
        problems.append(f"the input {arg.name!r} is {arg.type}, not tensor(int64)")
    shape = arg.shape
    if isinstance(shape, (list, tuple)) and shape:  # None or [] where the graph does not say
        if len(shape) != 2:
            problems.append(f"the {kind} {arg.name!r} has rank {len(shape)}, not 2")
        else:
            fixed = [f"{axis} size {size}" for axis, size in zip(dims, shape) if axis and isinstance(size, int)]
            if fixed:
                problems.append(f"the {kind} {arg.name!r} has a fixed {' and '.join(fixed)}")
    return problems


class OnnxRunner:
    """Runs an ONNX BERT classifier with ONNX Runtime."""

    name = "onnx"

    def __init__(self, plan: RuntimePlan) -> None:
        ort = require("onnxruntime", "onnx")
        if plan.model_file is None:
            raise ValueError("an ONNX plan names the graph to run")
        self._device = plan.device
        self._precision = plan.precision
        self.model_file = plan.model_file
        # Our int8 graphs turn a whole batch's logits NaN when any of its tokens overflows
        # (onnx/export.py guard_non_finite): the engine then isolates the text that did.
        self.non_finite_taints_batch = plan.precision is Precision.INT8
        self.session = self._open_session(ort, plan)
        self._inputs = {i.name for i in self.session.get_inputs()}
        check_classifier_signature(self.session, self.model_file)

    @property
    def device(self) -> str:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision.value

    def _open_session(self, ort, plan: RuntimePlan):
        try:
            return ort.InferenceSession(
                _openable(self.model_file), sess_options=session_options(plan), providers=self._providers()
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            if not is_unreadable_model_error(err):
                raise
            raise ModelFormatError(
                f"{self.model_file}: cannot open the ONNX model ({unreadable_reason(err)}); the file is "
                "missing, truncated or corrupt: export the model again (structsent export MODEL -o DIR)"
            ) from err

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


def _openable(model_file) -> str | bytes:
    """What ONNX Runtime opens the graph from: its path, or, where the path is not UTF-8 text (a
    directory named with other bytes, which ONNX Runtime refused with a traceback), its bytes."""
    path = str(model_file)
    return path if is_utf8_text(path) else Path(model_file).read_bytes()
