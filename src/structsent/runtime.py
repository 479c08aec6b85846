"""Resolve once: config + checkpoint + host -> one frozen RuntimePlan.

Which runtime runs the model (``backend="auto"``: ONNX Runtime on the CPU for fp32 and int8,
where it is installed; PyTorch otherwise), on which device, at which precision, and which ONNX
graph it opens: an exported directory's own, or the checkpoint exported on first use into the
cache (logged at WARNING with its path and time). Every refusal is a ConfigError naming the
valid choices; the backends only carry out the plan.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import Attention, Backend, EngineConfig, Precision
from .errors import ConfigError, MissingExtraError, OutputWriteError, require
from .plan import RuntimePlan, plan_for

log = logging.getLogger("structsent.runtime")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def resolve_runtime(checkpoint, config: EngineConfig) -> RuntimePlan:
    """The plan for running ``checkpoint`` as ``config`` asks, on this host. Settings it cannot
    run with are refused before anything is exported (a first use's export takes seconds)."""
    _warn_of_lengths_past_the_model(checkpoint, config)
    return _plan(checkpoint, config, export=True)


def check_runtime(checkpoint, config: EngineConfig) -> None:
    """Every refusal ``resolve_runtime`` would give ``checkpoint`` and ``config`` on this host,
    without its work (no ONNX export, no warning): an adapter checks settings so before it listens
    or starts a cluster, where the model's load comes later."""
    _plan(checkpoint, config, export=False)


def check_model_and_settings(name_or_path: str, config: EngineConfig | None = None) -> None:
    """A model named by a path, loaded (missing or broken: its typed error), and with ``config``
    the settings checked against it (``check_runtime``): what an adapter asks before it listens
    or starts a cluster, where the model's own load comes later. A hub id is left to that load,
    which fetches it or says why it cannot."""
    from .models import load_checkpoint
    from .models.hub import looks_like_hub_id

    if looks_like_hub_id(str(name_or_path)):
        return
    checkpoint = load_checkpoint(name_or_path)
    if config is not None:
        check_runtime(checkpoint, config)


def _warn_of_lengths_past_the_model(checkpoint, config: EngineConfig) -> None:
    positions = checkpoint.shape.max_position_embeddings
    if config.max_length > positions:
        log.warning("max_length=%d is more than the model's %d positions: texts are cut (or windowed) at %d tokens",
                    config.max_length, positions, positions)
        if config.window_stride is not None and config.window_stride > positions - 2:
            log.warning("window_stride=%d is more than the %d tokens a window of the model's %d positions holds: "
                        "windows start every %d tokens", config.window_stride, positions - 2, positions,
                        positions - 2)


def _plan(checkpoint, config: EngineConfig, *, export: bool) -> RuntimePlan:
    """The plan; without ``export``, an ONNX plan for a checkpoint not yet exported has no model file."""
    if checkpoint.is_exported:
        if config.backend is Backend.TORCH:
            raise ConfigError(f"{checkpoint.directory} holds an ONNX model, which only backend='onnx' runs")
        return _onnx_plan(checkpoint, config, Path(checkpoint.model_file))
    if config.backend is Backend.ONNX:
        return _onnx_plan(checkpoint, config, None, export=export)
    if config.backend is Backend.AUTO and _onnx_preferred(config):
        plan = _onnx_plan_or_none(checkpoint, config, export=export)
        if plan is not None:
            return plan
    return _torch_plan(checkpoint, config)


# -- PyTorch ------------------------------------------------------------------------------------
def _torch_plan(checkpoint, config: EngineConfig) -> RuntimePlan:
    device = torch_device(config.device, config.precision)
    precision = torch_precision(config.precision, device)
    plan = plan_for(config, backend=Backend.TORCH, device=device, precision=precision,
                    max_positions=checkpoint.shape.max_position_embeddings)
    packed = packed_attention(config.attention, device, precision, pad_multiple=plan.pad_multiple)
    return plan.replace(packed=packed, packed_required=packed and config.attention is Attention.PACKED)


def packed_attention(requested: Attention, device: str, precision: Precision, *,
                     pad_multiple: int | None = None) -> bool:
    """Whether the torch runner computes attention over packed texts (no padding).

    On CUDA in fp16/bf16, where torch has the variable-length flash kernel; on the CPU at every
    precision (attention text by text), unless ``pad_multiple`` asks for padded lengths. ``auto``
    takes it where it can run; the runner checks it against padded attention at load (falling
    back if not equal).
    """
    if not device.startswith("cuda"):
        if requested is Attention.PACKED and pad_multiple is not None:
            raise ConfigError(f"attention=packed computes no padding, and pad_multiple={pad_multiple} asks "
                              "for texts padded to its multiples; use one of them (attention=auto pads then)")
        return requested is not Attention.PADDED and pad_multiple is None
    possible = precision in (Precision.FP16, Precision.BF16)
    if requested is Attention.PACKED and not possible:
        raise ConfigError(f"attention=packed runs on CUDA in fp16 or bf16 (here: device {device}, "
                          f"precision {precision.value}); use attention=padded or auto")
    if requested is Attention.PADDED or not possible:
        return False
    from .modeling import varlen_kernel_available

    available = varlen_kernel_available()
    if requested is Attention.PACKED and not available:
        raise ConfigError("attention=packed needs torch.nn.attention.varlen (torch >= 2.10 with CUDA); "
                          "use attention=padded or auto")
    return available


def torch_device(requested: str, precision: Precision = Precision.AUTO) -> str:
    """'cpu' or 'cuda:N' from what the config asks and what this torch build offers; int8 runs on
    the CPU only, so "auto" is the CPU for it."""
    import torch

    if requested == "auto" and precision is Precision.INT8:
        return "cpu"
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r}: CUDA is not available (no GPU, or a CPU-only build of torch); "
                "use device='cpu' or install a CUDA build of torch"
            )
        return _on_this_host(requested, torch.cuda.device_count())
    return "cpu"


def _on_this_host(requested: str, gpus: int | None) -> str:
    """'cuda:N' for a GPU this host has ('cuda' is the first); a number past them (``gpus``: None where
    unknown) is a ConfigError (it failed in the runtime with its own error: "invalid device ordinal")."""
    index = int(requested.partition(":")[2] or 0)
    if gpus is not None and index >= gpus:
        raise ConfigError(f"device {requested!r}: this host has {_gpus_named(gpus)}")
    return f"cuda:{index}"


def _gpus_named(gpus: int) -> str:
    if gpus == 0:
        return "no GPU"
    return "1 GPU (cuda:0)" if gpus == 1 else f"{gpus} GPUs (cuda:0..cuda:{gpus - 1})"


def torch_precision(requested: Precision, device: str) -> Precision:
    if requested is Precision.AUTO:
        return Precision.FP16 if device.startswith("cuda") else Precision.FP32
    if requested is Precision.INT8 and device != "cpu":
        raise ConfigError("precision int8 runs on the CPU only; use fp16 or bf16 on CUDA")
    if requested is Precision.BF16 and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU does not support bf16; use precision='fp16'")
    return requested


# -- ONNX Runtime -------------------------------------------------------------------------------
def _onnx_preferred(config: EngineConfig) -> bool:
    """backend='auto' runs ONNX Runtime for fp32 and int8 on the CPU (measured fastest there)."""
    if config.precision not in (Precision.AUTO, Precision.FP32, Precision.INT8):
        return False
    if config.attention is Attention.PACKED:  # a torch-only path: torch's plan says where it runs
        return False
    if config.device == "cpu":
        return True
    if config.device == "auto":
        import torch

        return not torch.cuda.is_available()
    return False


def _onnx_plan_or_none(checkpoint, config: EngineConfig, *, export: bool) -> RuntimePlan | None:
    """The ONNX plan ``backend='auto'`` prefers on the CPU, or None where it cannot be had
    (onnxruntime or onnx not installed, the export cache not writable): torch then runs."""
    try:
        return _onnx_plan(checkpoint, config.replace(device="cpu"), None, export=export)
    except MissingExtraError:
        return None
    except (OSError, OutputWriteError) as err:
        log.warning("ONNX export unavailable (%s); running torch instead", err)
        return None


def _onnx_plan(checkpoint, config: EngineConfig, model_file: Path | None, *, export: bool = True) -> RuntimePlan:
    if config.attention is Attention.PACKED:
        raise ConfigError("attention=packed runs with the torch backend; use backend=torch or attention=auto")
    device = onnx_device(config.device, config.precision)
    precision = onnx_precision(config.precision, checkpoint, device)
    # The sizes first: a setting they refuse (a token budget below the length) costs no export.
    plan = plan_for(config, backend=Backend.ONNX, device=device, precision=precision,
                    max_positions=checkpoint.shape.max_position_embeddings, model_file=model_file)
    if model_file is None and export:
        from .models.onnx import MODEL_FILE
        from .onnx.cache import cached_export
        from .onnx.export import ExportOptions

        plan = plan.replace(model_file=cached_export(checkpoint, ExportOptions(precision=precision, optimize=True))
                            / MODEL_FILE)
    return plan


def onnx_device(requested: str, precision: Precision = Precision.AUTO) -> str:
    """'cpu' or 'cuda:N' from what the config asks and what ONNX Runtime offers."""
    from .backends.onnx import CUDA_PROVIDER

    ort = require("onnxruntime", "onnx")
    has_cuda = CUDA_PROVIDER in ort.get_available_providers()
    if requested == "auto":
        return "cuda:0" if has_cuda and precision is not Precision.INT8 else "cpu"
    if requested.startswith("cuda"):
        if not has_cuda:
            raise ConfigError(
                f"device {requested!r}: this onnxruntime has no CUDAExecutionProvider; install "
                "onnxruntime-gpu, or use device='cpu' or backend='torch'"
            )
        import torch  # (counts the GPUs where its build has CUDA; an onnxruntime-gpu beside a CPU torch: not counted)

        return _on_this_host(requested, torch.cuda.device_count() if torch.cuda.is_available() else None)
    return "cpu"


def onnx_precision(requested: Precision, checkpoint, device: str) -> Precision:
    """The precision of the graph to run: an exported directory's own, else fp32 or int8."""
    if checkpoint.is_exported:
        own = Precision(checkpoint.precision)
        if requested not in (Precision.AUTO, own):
            if requested in (Precision.FP32, Precision.INT8):
                flag = " --int8" if requested is Precision.INT8 else " (without --int8)"
                remedy = f"export the source checkpoint again: structsent export SOURCE_MODEL{flag} -o DIR"
            else:  # fp16 / bf16: no ONNX export holds them; the torch backend runs them
                remedy = (f"no export holds {requested.value}: load the source checkpoint with "
                          f"backend='torch', precision={requested.value!r}")
            raise ConfigError(
                f"{checkpoint.directory} holds an ONNX model of precision {own.value}; precision={requested.value!r} needs "
                f"another model: {remedy}"
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
