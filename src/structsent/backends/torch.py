"""PyTorch runtime: CPU (fp32, bf16, dynamic int8) and CUDA (fp16/bf16, pinned memory, async copies)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import numpy as np
import torch

from ..batching import pack_batch, pad_batch
from ..config import Precision
from ..errors import ConfigError, DeviceOutOfMemoryError
from ..int8 import int8_projections, smooth_encoder
from ..modeling import BertClassifier, PackedTexts, VarlenAttention, flash_varlen_attention, from_hf_state_dict, per_text_varlen_attention
from ..plan import RuntimePlan

log = logging.getLogger("structsent.torch")

_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}
# Weights in 7 bits: u8 activations x s7 weights summed in pairs fit in 16 bits, so hosts without
# VNNI (whose int8 kernels add such pairs in saturating 16-bit arithmetic) compute them exactly.
INT8_WEIGHT_MAX = 63
# Packed attention is checked at load against padded attention on a batch of random texts; it is
# used only if the logits agree this closely, times the largest logit (at least 1). fp16/bf16: two
# kernels' rounding; fp32: exact maths; int8: activations are quantized with one scale per call,
# which the padding tokens change (bundled model's real reviews: logits 0.026-0.039 apart).
PACKED_TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 2e-2, Precision.BF16: 8e-2, Precision.INT8: 1e-1}
PACKED_CHECK_LENGTHS = (61, 7, 33, 2, 128)
# On CUDA at fp16/bf16 the feed-forward activation is applied in the epilogue of the product before
# it (cuBLASLt), which saves a pass over the layer's widest tensor. Its GELU is the tanh form: within
# 4.8e-4 (absolute) of exact GELU, the order of fp16's own rounding of activations of magnitude 1
# (a unit in the last place there: 9.8e-4 in fp16, 7.8e-3 in bf16). Checked at load against the
# plain activation on the same random batch, to PACKED_TOLERANCE; kept off if it differs or fails.
EPILOGUE_PRECISIONS = (Precision.FP16, Precision.BF16)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (else bf16 is emulated and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _set_process_threads(threads: int) -> None:
    """PyTorch has one CPU thread count per process: a second torch model loaded with another
    ``num_threads`` changes it for the first as well, which is said (ONNX sessions each keep theirs)."""
    current = torch.get_num_threads()
    if current != threads and _threads_set_here:
        log.warning("num_threads=%d: PyTorch's thread count is the whole process's; the torch models loaded "
                    "before with num_threads=%d now run on %d threads too", threads, current, threads)
    torch.set_num_threads(threads)
    _threads_set_here.append(threads)


_threads_set_here: list[int] = []  # the counts torch models of this process asked for


def _one_thread_in_forked_children() -> None:
    """A process forked after torch ran a parallel region on the CPU hung at its own first one (the
    OpenMP thread pool does not survive fork): a multiprocessing pool, celery's prefork workers and
    gunicorn --preload fork so, after a model was loaded (and warmed) in the parent. Such children
    run torch on one thread each, which works; the parent keeps its count."""
    if not _fork_handler:
        os.register_at_fork(after_in_child=_run_on_one_thread)
        _fork_handler.append(_run_on_one_thread)


def _run_on_one_thread() -> None:
    torch.set_num_threads(1)


_fork_handler: list = []  # registered once per process


class TorchRunner:
    """Runs a BertClassifier on one device at one precision."""

    name = "torch"

    def __init__(self, checkpoint, plan: RuntimePlan, *, varlen_attention: VarlenAttention | None = None,
                 activation_epilogue: bool | None = None) -> None:
        """``varlen_attention``: the packed path's attention (default: the flash kernel on CUDA, text
        by text on the CPU). ``activation_epilogue``: whether to try the feed-forward activation in
        its product's epilogue (default: on CUDA at fp16/bf16, ``wants_activation_epilogue``)."""
        if plan.num_threads:
            _set_process_threads(plan.num_threads)
        _one_thread_in_forked_children()
        self._device = torch.device(plan.device)
        self._precision = plan.precision
        self.model = build_model(checkpoint, self._precision, self._device)
        self._pinned: torch.Tensor | None = None
        self._next_slot = 0
        self._slot_free: list = [None, None]
        self._copy_stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None
        self._varlen = varlen_attention or (flash_varlen_attention if self._device.type == "cuda"
                                            else per_text_varlen_attention)
        if activation_epilogue is None:
            activation_epilogue = wants_activation_epilogue(self._device.type, self._precision)
        self.activation_epilogue = activation_epilogue and self._activation_epilogue_usable(plan.max_length)
        self.packed = plan.packed and self._packed_attention_usable(plan.max_length, required=plan.packed_required)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def precision(self) -> str:
        return self._precision.value

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.fetch(self.launch(self.stage(input_ids, attention_mask)))

    # A three-step form of run() lets the engine overlap work: stage(next) is issued while the
    # device still computes the batch launched before it, and fetch() is the only wait.
    def stage(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> "_Staged":
        """Put a batch on its way to the device (asynchronous on CUDA, from pinned memory).

        A batch without padding goes without a mask: decided here on the host, so that the
        model never has to ask the device (a synchronisation) and runs its mask-free kernels.
        """
        packed = pack_batch(input_ids, attention_mask) if self.packed else None
        if packed is not None:
            return self._stage_packed(*packed)
        return self._stage_padded(input_ids, attention_mask)

    def _stage_padded(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> "_Staged":
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        padded = not bool(attention_mask.all())
        if self._device.type != "cuda":
            return _Staged(ids, mask if padded else None, None)
        return self._stage_on_cuda(ids, mask, padded)

    def _stage_packed(self, ids: np.ndarray, positions: np.ndarray, cu_lengths: np.ndarray,
                      max_length: int) -> "_Staged":
        """Packed texts on their way to the device: ids, positions and cumulative lengths in one
        copy. The int32 lengths the kernel takes are made in ``launch``, after the copy is waited
        for on the compute stream (here it may still be in flight)."""
        parts = [torch.from_numpy(a) for a in (ids, positions, cu_lengths.astype(np.int64))]
        copied = None
        if self._device.type == "cuda":
            stream, copied = self._copy_to_cuda(*parts)
        else:
            stream = torch.cat(parts)
        tokens = len(ids)
        packed = _PackedOnDevice(stream[:tokens], stream[tokens : 2 * tokens], stream[2 * tokens :], max_length)
        return _Staged(packed.ids, None, copied, packed)

    def launch(self, staged: "_Staged") -> "_Launched":
        """Start computing a staged batch; on CUDA, returns before the device is done."""
        try:
            with torch.inference_mode():
                if staged.copied is not None:
                    torch.cuda.current_stream(self._device).wait_event(staged.copied)
                with self._attention_kernels():
                    if staged.packed is not None:
                        logits = self.model.forward_packed(staged.packed.texts(), self._varlen).float()
                    else:
                        logits = self.model(staged.ids, staged.mask).float()
                if self._device.type != "cuda":
                    return _Launched(logits, None)
                host = torch.empty(logits.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(logits, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                return _Launched(host, done)
        except torch.cuda.OutOfMemoryError as err:
            detail = str(err).splitlines()[0]
        # Raised outside the except block: the failed forward's tensors (held by the original
        # traceback) are freed before the cache is emptied and the caller retries smaller.
        raise self._out_of_memory(staged, detail)

    def fetch(self, launched: "_Launched") -> np.ndarray:
        """Wait for a launched batch and return its logits."""
        try:
            if launched.done is not None:
                launched.done.synchronize()
            return launched.logits.numpy()
        except torch.cuda.OutOfMemoryError as err:  # asynchronous errors surface at the wait
            detail = str(err).splitlines()[0]
        self._release_cached_memory()
        raise DeviceOutOfMemoryError(f"out of device memory while computing a batch ({detail})")

    def _stage_on_cuda(self, ids: torch.Tensor, mask: torch.Tensor, padded: bool) -> "_Staged":
        on_device, copied = self._copy_to_cuda(ids.view(-1), mask.view(-1))
        n = ids.numel()
        return _Staged(on_device[:n].view(ids.shape), on_device[n:].view(mask.shape) if padded else None, copied)

    def _copy_to_cuda(self, *parts: torch.Tensor) -> tuple[torch.Tensor, object]:
        """int64 vectors copied, one after another, to one device vector on the copy stream:
        (device tensor, copy-done event). Each part goes straight into the pinned slot.

        Two pinned slots used in turn: the copy of batch i+1 may be in flight while batch i's
        slot is still being read. A slot is reused only after its previous copy finished.
        """
        slot = self._next_slot
        self._next_slot = 1 - slot
        if self._slot_free[slot] is not None:
            self._slot_free[slot].synchronize()
        host = self._pinned_slot(slot, sum(part.numel() for part in parts))
        start = 0
        for part in parts:
            host[start : start + part.numel()].copy_(part)
            start += part.numel()
        copy_stream = self._copy_stream
        with torch.cuda.stream(copy_stream):
            on_device = host.to(self._device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(copy_stream)
        self._slot_free[slot] = copied
        # The compute stream will use memory allocated on the copy stream.
        on_device.record_stream(torch.cuda.current_stream(self._device))
        return on_device, copied

    def _activation_epilogue_usable(self, max_length: int) -> bool:
        """Turn on the activation epilogue if the model can take it and it agrees with the plain
        activation on a batch of random texts; else leave it off (with a warning if it failed)."""
        ids, mask = self._random_batch(max_length)
        plain = self.fetch(self.launch(self._stage_padded(ids, mask)))  # (a failure here is the model's own)
        if not self.model.activation_epilogue(True):
            return False
        try:
            fused = self.fetch(self.launch(self._stage_padded(ids, mask)))
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            self.model.activation_epilogue(False)
            log.warning("the activation epilogue failed (%s); applying the activation on its own", _first_line(err))
            return False
        problem = _differs(fused, plain, PACKED_TOLERANCE[self._precision], against="the plain activation")
        if problem is not None:
            self.model.activation_epilogue(False)
            log.warning("the activation epilogue %s; applying the activation on its own", problem)
            return False
        return True

    def _random_batch(self, max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """A padded batch of random texts of PACKED_CHECK_LENGTHS tokens (capped at max_length)."""
        rng = np.random.default_rng(0)
        vocab = self.model.shape.vocab_size
        return pad_batch([rng.integers(0, vocab, size=min(n, max_length)) for n in PACKED_CHECK_LENGTHS])

    def _packed_attention_usable(self, max_length: int, *, required: bool) -> bool:
        """Whether packed attention passes its check (``_packed_differs``); if not, the runner
        stays padded with a warning, or, when attention=packed was asked for, refuses to load."""
        problem = self._packed_differs(max_length)
        if problem is None:
            return True
        if required:
            raise ConfigError(f"attention=packed cannot run here: {problem}; use attention=auto or padded")
        log.warning("%s; running padded", problem)
        return False

    def _packed_differs(self, max_length: int) -> str | None:
        """Run one batch of random texts both ways: None when the logits agree (PACKED_TOLERANCE)
        and are finite; else what went wrong (a kernel this GPU or torch cannot run, non-finite
        values, or a different answer)."""
        ids, mask = self._random_batch(max_length)
        packed_arrays = pack_batch(ids, mask)
        assert packed_arrays is not None  # right padding, no empty row: always packable
        try:
            padded = self.fetch(self.launch(self._stage_padded(ids, mask)))
            packed = self.fetch(self.launch(self._stage_packed(*packed_arrays)))
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            return f"the packed attention kernel failed ({_first_line(err)})"
        problem = _differs(packed, padded, PACKED_TOLERANCE[self._precision], against="padded")
        return None if problem is None else f"packed attention {problem}"

    def _pinned_slot(self, slot: int, size: int) -> torch.Tensor:
        if self._pinned is None or self._pinned.shape[1] < size:
            self._pinned = torch.empty((2, max(size, 1 << 17)), dtype=torch.int64).pin_memory()
        return self._pinned[slot, :size]

    def _attention_kernels(self):
        """On CUDA, attention by the flash or memory-efficient kernels, never cuDNN's: cuDNN builds
        an execution plan for every new sequence length (about 3 ms of host time per layer and
        batch, measured on an H100), and with length-sorted batches almost every shape is new."""
        if self._device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _out_of_memory(self, staged: "_Staged", detail: str) -> DeviceOutOfMemoryError:
        self._release_cached_memory()
        if staged.packed is not None:
            texts, tokens = len(staged.packed.cu_lengths) - 1, staged.ids.numel()
            return DeviceOutOfMemoryError(f"out of device memory on {texts} packed texts, {tokens} tokens ({detail})")
        rows, width = staged.ids.shape
        return DeviceOutOfMemoryError(f"out of device memory on a batch of {rows} x {width} tokens ({detail})")

    def _release_cached_memory(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def wants_activation_epilogue(device_type: str, precision: Precision) -> bool:
    """Whether a runner tries the activation epilogue: on CUDA at half precision, where the
    activation is a pass over memory of its own (on a CPU the product and the activation are
    separate steps either way)."""
    return device_type == "cuda" and precision in EPILOGUE_PRECISIONS


def _differs(logits: np.ndarray, reference: np.ndarray, relative: float, *, against: str) -> str | None:
    """None when ``logits`` are finite and within ``relative`` times the largest magnitude of
    ``reference`` (at least 1) of it; else how far apart they are, to follow a subject."""
    difference = float(np.abs(logits - reference).max()) if np.isfinite(logits).all() else float("inf")
    tolerance = relative * max(1.0, float(np.abs(reference).max()))
    if difference <= tolerance:
        return None
    return f"differs from {against} by {difference:.3g} (tolerance {tolerance:.3g})"


def _first_line(err: BaseException) -> str:
    first_line = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first_line}"


class _PackedOnDevice:
    """Packed texts as copied: int64 views of one device buffer (see ``_stage_packed``)."""

    __slots__ = ("ids", "positions", "cu_lengths", "max_length")

    def __init__(self, ids: torch.Tensor, positions: torch.Tensor, cu_lengths: torch.Tensor, max_length: int) -> None:
        self.ids, self.positions, self.cu_lengths, self.max_length = ids, positions, cu_lengths, max_length

    def texts(self) -> PackedTexts:
        """The model's input; call on the compute stream once the copy is waited for."""
        return PackedTexts(ids=self.ids, positions=self.positions, cu_lengths=self.cu_lengths.to(torch.int32),
                           max_length=self.max_length)


class _Staged:
    __slots__ = ("ids", "mask", "copied", "packed")

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor | None, copied,
                 packed: _PackedOnDevice | None = None) -> None:
        self.ids, self.mask, self.copied, self.packed = ids, mask, copied, packed


class _Launched:
    __slots__ = ("logits", "done")

    def __init__(self, logits: torch.Tensor, done) -> None:
        self.logits, self.done = logits, done


def build_model(checkpoint, precision: Precision, device: torch.device) -> BertClassifier:
    model = BertClassifier(checkpoint.shape)
    weights = from_hf_state_dict(checkpoint.state_dict, checkpoint.shape.num_layers)
    model.load_state_dict(weights, strict=True)
    model.eval().requires_grad_(False)
    if precision is Precision.INT8:
        return quantize_encoder(model, checkpoint.tokenizer)
    return model.to(device=device, dtype=_DTYPES[precision])


def quantize_encoder(model: BertClassifier, tokenizer) -> BertClassifier:
    """Dynamic int8 for the encoder's projections, smoothed first (the recipe of ``structsent.int8``,
    shared with the ONNX export).

    Q/K/V, attention output and feed-forward input projections run in int8 (weights per output
    channel in 7 bits, activations per batch in 8 bits) wherever they run over every token. The
    feed-forward down-projection stays fp32 (its input, the GELU output, is wide and heavy-tailed:
    one scale per batch loses most there), and so does everything computed at [CLS] only: the
    last layer past its Q/K/V projection, the pooler and the classifier head (no time to save,
    and their errors go straight into the logits). Measured on three trained checkpoints of the
    bundled model's architecture, this moves probabilities about a third as much as quantizing
    every Linear with torch's defaults; smoothing the quantized projections' inputs (calibrated
    here, on the packaged sample reviews) moves them a third less again on the bundled model.
    """
    projections = int8_projections(len(model.layers))
    for i, name in projections:  # quantizing twice would be a bug of the caller
        if not isinstance(getattr(model.layers[i], name), torch.nn.Linear):
            raise TypeError(f"layers.{i}.{name} is not a Linear: already quantized?")
    scales = smooth_encoder(model, tokenizer)  # also folds the attention outputs' smoothing into the values
    for i, name in projections:
        layer = model.layers[i]
        setattr(layer, name, Int8Linear(getattr(layer, name), input_scale=scales.get((i, name))))
    return model


class Int8Linear(torch.nn.Module):
    """A Linear computed by torch's dynamic int8 kernel (the one torch.ao's dynamic Linear calls).

    Weights: symmetric, one scale per output channel, 7 bits (INT8_WEIGHT_MAX). Activations:
    quantized per call over their full 8-bit range (``reduce_range=False``: torch's own dynamic
    Linear uses 7, which costs more accuracy than 7-bit weights do). ``input_scale`` (one per
    input channel): the input is divided by it and the weight's columns multiplied by it before
    quantization, the same product with fewer outlier channels (``structsent.int8``).
    """

    def __init__(self, linear: torch.nn.Linear, *, input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self._inverse_scale: torch.Tensor | None = None
        if input_scale is not None:
            weight = weight * input_scale
            self._inverse_scale = (1 / input_scale).float()
        scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / INT8_WEIGHT_MAX
        zero_points = torch.zeros(weight.shape[0], dtype=torch.int64)
        bias = None if linear.bias is None else linear.bias.detach().float()
        with warnings.catch_warnings():
            # torch marks its quantized tensors deprecated (in favour of torchao, not a dependency);
            # the int8 kernels below are the ones torch.ao's dynamic Linear itself calls.
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales.double(), zero_points, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._inverse_scale is not None:
            x = x * self._inverse_scale
        if not torch.isfinite(x.sum()):  # one pass; NaN and infinity reach the sum (as may an overflow)
            return self._forward_marking_non_finite(x)
        return torch.ops.quantized.linear_dynamic(x, self._packed, False)

    def _forward_marking_non_finite(self, x: torch.Tensor) -> torch.Tensor:
        """A token holding NaN or infinity would set the whole call's activation scale, and the
        quantized product would then be finite garbage for every token. Those tokens are computed
        as zeros and come out as NaN instead: as in fp32, their sequence's outputs turn non-finite
        (attention spreads the NaN) and the engine flags it; the other tokens are computed as usual."""
        bad = ~torch.isfinite(x).all(dim=-1, keepdim=True)
        y = torch.ops.quantized.linear_dynamic(x.masked_fill(bad, 0.0), self._packed, False)
        return y.masked_fill(bad, float("nan"))

    def extra_repr(self) -> str:
        smoothed = ", smoothed inputs" if self._inverse_scale is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel weights{smoothed}"
