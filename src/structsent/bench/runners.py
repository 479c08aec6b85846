"""The configurations a benchmark compares, each built untimed and then run on the same texts.

A configuration's ``build`` loads what it needs and returns a function texts -> Outcome; only
that function is timed. Baselines: one text per call, fixed batches of 32 in input order, and
``transformers.pipeline(batch_size=32)``, the path a user would pick first.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..batching import padding_fraction
from ..models.shape import LastLayer
from ..telemetry import NvmlDevice, nvml_device

PIPELINE_BATCH = 32
WARMUP_TEXTS = 4
# On a GPU every new batch shape costs a one-off (kernel choice, allocator growth): warm up on
# enough texts to meet most shapes, so that a short run measures the steady state.
WARMUP_TEXTS_GPU = 2048


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setup:
    """What every configuration shares."""

    model_dir: Path
    device: str  # "cpu" or "cuda[:N]"
    threads: int | None = None
    token_budget: int | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


@dataclasses.dataclass(frozen=True)
class Outcome:
    labels: list[str]
    real_tokens: int
    padded_tokens: int

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.real_tokens, self.padded_tokens)


LabelFn = Callable[[list[str]], Outcome]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Configuration:
    name: str
    title: str
    build: Callable[[Setup], LabelFn]
    exact: bool  # fp32 arithmetic: equal to the reference up to rounding
    # What of the last layer it computes: structsent's model (every path but the pipeline) runs it at [CLS] only.
    last_layer: LastLayer = LastLayer.CLS_ONLY


# -- builders ---------------------------------------------------------------------------------------
def _load(setup: Setup, **options):
    import structsent

    return structsent.load(setup.model_dir, device=setup.device, num_threads=setup.threads,
                           token_budget=setup.token_budget, **options)


def structsent_path(backend: str, precision: str, **options) -> Callable[[Setup], LabelFn]:
    """structsent as shipped: sorted by length, token-budget batches, results in input order
    (``options``: other engine settings, e.g. ``attention="padded"``)."""

    def build(setup: Setup) -> LabelFn:
        clf = _load(setup, backend=backend, precision=precision, **options)

        def label(texts: list[str]) -> Outcome:
            results, stats = clf.label_with_stats(texts)
            return Outcome([r.label for r in results], stats.real_tokens, stats.padded_tokens)

        return label

    return build


def onnx_unfused(precision: str) -> Callable[[Setup], LabelFn]:
    """An ONNX export without ONNX Runtime's BERT fusions (to measure what the fusions give)."""

    def build(setup: Setup) -> LabelFn:
        from ..config import Precision
        from ..models import load_checkpoint
        from ..onnx.cache import cached_export
        from ..onnx.export import ExportOptions

        options = ExportOptions(precision=Precision(precision), optimize=False)
        directory = cached_export(load_checkpoint(setup.model_dir), options)
        return structsent_path("onnx", "auto")(dataclasses.replace(setup, model_dir=directory))

    return build


def one_by_one(setup: Setup) -> LabelFn:
    """One text per model call: no padding, no batching."""
    clf = _load(setup, backend="torch", precision="fp32")

    def label(texts: list[str]) -> Outcome:
        labels, real = [], 0
        for text in texts:
            results, stats = clf.label_with_stats([text])
            labels.append(results[0].label)
            real += stats.real_tokens
        return Outcome(labels, real, real)

    return label


def fixed_batches(setup: Setup) -> LabelFn:
    """Batches of 32 in input order, each padded to its longest text (no sorting, no budget)."""
    from ..batching import pad_batch
    from ..results import softmax

    clf = _load(setup, backend="torch", precision="fp32")

    def label(texts: list[str]) -> Outcome:
        sequences = [e.sequences[0] for e in clf.encode(texts)]
        labels, padded = [], 0
        for start in range(0, len(sequences), PIPELINE_BATCH):
            ids, mask = pad_batch(sequences[start : start + PIPELINE_BATCH], clf.tokenizer.pad_id)
            probabilities = softmax(clf.runner.run(ids, mask))
            labels += [clf.labels[i] for i in probabilities.argmax(axis=1)]
            padded += ids.size
        return Outcome(labels, sum(map(len, sequences)), padded)

    return label


def transformers_pipeline(setup: Setup) -> LabelFn:
    """``transformers.pipeline("text-classification", batch_size=32)`` on the same weights."""
    from ..errors import require
    from ..models import load_checkpoint

    transformers = require("transformers", "bench")
    torch = require("torch", "bench")
    if setup.threads:
        torch.set_num_threads(setup.threads)
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar broke bench's own lines
    pipe = transformers.pipeline(
        "text-classification", model=str(setup.model_dir), tokenizer=str(setup.model_dir),
        device=setup.device if setup.on_gpu else "cpu", batch_size=PIPELINE_BATCH,
    )
    checkpoint = load_checkpoint(setup.model_dir)  # read once: its tokenizer and its labels
    lengths_of = _token_lengths(checkpoint.tokenizer)
    labels = _labels_by_pipeline_name(pipe.model.config, checkpoint.labels)
    max_length = min(512, pipe.model.config.max_position_embeddings)  # a model of fewer positions: its own

    def label(texts: list[str]) -> Outcome:
        outputs = pipe(texts, batch_size=PIPELINE_BATCH, truncation=True, max_length=max_length)
        lengths = lengths_of(texts)
        padded = sum(
            max(lengths[i : i + PIPELINE_BATCH]) * len(lengths[i : i + PIPELINE_BATCH])
            for i in range(0, len(lengths), PIPELINE_BATCH)
        )
        return Outcome([labels[o["label"]] for o in outputs], sum(lengths), padded)

    return label


def _labels_by_pipeline_name(config, ours: Sequence[str]) -> dict[str, str]:
    """The pipeline's label name -> structsent's for the same class index: where structsent names
    classes otherwise (label_mapping.json, the 负面/正面 of a StructBERT config without id2label)
    the pipeline says LABEL_0 / LABEL_1, and comparing names read 0% agreement for equal predictions."""
    return {str(config.id2label[index]): ours[index] for index in range(len(ours))}


def _token_lengths(tokenizer) -> Callable[[list[str]], list[int]]:
    def lengths(texts: list[str]) -> list[int]:
        return [len(e.sequences[0]) if e.sequences else 0 for e in tokenizer.encode(texts)]

    return lengths


# -- which configurations -----------------------------------------------------------------------
def configurations(device: str, *, bf16: str = "auto") -> dict[str, Configuration]:
    """Every configuration offered on ``device``, by name, in table order."""
    bf16_title = None
    if bf16 == "always" or (bf16 == "auto" and bf16_supported(device)):
        bf16_title = "structsent torch bf16" + ("" if bf16_supported(device) else " (emulated: no native bf16)")
    return {c.name: c for c in _table(on_gpu=device.startswith("cuda"), bf16_title=bf16_title)}


def configuration_names(*, on_gpu: bool) -> list[str]:
    """The names offered on CUDA or on a CPU, torch-bf16 included, without asking the host (for --help)."""
    return [c.name for c in _table(on_gpu=on_gpu, bf16_title="structsent torch bf16")]


def _table(*, on_gpu: bool, bf16_title: str | None) -> list[Configuration]:
    """The configurations of a GPU or a CPU, in table order (torch bf16 where ``bf16_title`` names it)."""
    table = [
        Configuration(name="one-by-one", title="one text per call (torch fp32)", build=one_by_one, exact=True),
        Configuration(name="fixed-32", title="fixed batch 32, input order (torch fp32)", build=fixed_batches, exact=True),
        Configuration(name="pipeline", title="transformers.pipeline, batch 32", build=transformers_pipeline, exact=True,
                      last_layer=LastLayer.FULL),
        Configuration(name="torch-fp32", title="structsent torch fp32", build=structsent_path("torch", "fp32"), exact=True),
        Configuration(name="onnx-fp32", title="structsent ONNX fp32 (fused)", build=structsent_path("onnx", "fp32"), exact=True),
    ]
    if on_gpu:
        table += [
            Configuration(name="torch-fp16", title="structsent torch fp16 (attention: auto, packed where it runs)",
                          build=structsent_path("torch", "fp16"), exact=False),
            Configuration(name="torch-fp16-padded", title="structsent torch fp16, padded attention",
                          build=structsent_path("torch", "fp16", attention="padded"), exact=False),
        ]
    else:
        table += [
            Configuration(name="onnx-int8", title="structsent ONNX int8 (fused, dynamic)",
                          build=structsent_path("onnx", "int8"), exact=False),
            Configuration(name="torch-int8", title="structsent torch int8 (dynamic)",
                          build=structsent_path("torch", "int8"), exact=False,
                          last_layer=LastLayer.CLS_ONLY_QKV),  # its last Q/K/V projection is int8, not sliced
            Configuration(name="onnx-fp32-unfused", title="structsent ONNX fp32 (not fused)",
                          build=onnx_unfused("fp32"), exact=True),
            Configuration(name="onnx-int8-unfused", title="structsent ONNX int8 (not fused)",
                          build=onnx_unfused("int8"), exact=False),
        ]
    if bf16_title is not None:
        table.append(Configuration(name="torch-bf16", title=bf16_title, build=structsent_path("torch", "bf16"),
                                   exact=False))
    return table


DEFAULT_CONFIGURATIONS = ("one-by-one", "fixed-32", "pipeline", "torch-fp32", "onnx-fp32", "onnx-int8",
                          "torch-int8", "torch-fp16", "torch-fp16-padded", "torch-bf16")


def bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    from ..backends.torch import cpu_supports_bf16

    return cpu_supports_bf16()


# -- measuring ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Timing:
    seconds: float
    outcome: Outcome
    gpu_utilisation: float | None = None  # mean NVML utilisation, percent
    gpu_memory_mib: float | None = None  # peak NVML memory in use

    @staticmethod
    def combine(parts: list["Timing"]) -> "Timing":
        """One Timing for consecutive chunks of the same texts."""
        seconds = sum(p.seconds for p in parts)
        outcome = Outcome([label for p in parts for label in p.outcome.labels],
                          sum(p.outcome.real_tokens for p in parts), sum(p.outcome.padded_tokens for p in parts))
        sampled = [(p.gpu_utilisation, p.seconds) for p in parts if p.gpu_utilisation is not None]
        utilisation = sum(u * s for u, s in sampled) / sum(s for _, s in sampled) if sampled else None
        memory = max((p.gpu_memory_mib for p in parts if p.gpu_memory_mib is not None), default=None)
        return Timing(seconds, outcome, utilisation, memory)


def prepare(config: Configuration, setup: Setup, texts: list[str]) -> LabelFn:
    """Build a configuration (untimed) and warm it up on a few texts."""
    label = config.build(setup)
    label(texts[: WARMUP_TEXTS_GPU if setup.on_gpu else WARMUP_TEXTS])
    return label


def time_chunk(label: LabelFn, texts: list[str], device: str) -> Timing:
    """Time one pass of ``label`` over ``texts``."""
    with GpuSampler(device) as sampler:
        started = time.perf_counter()
        outcome = label(texts)
        seconds = time.perf_counter() - started
    return Timing(seconds, outcome, sampler.mean_utilisation, sampler.peak_memory_mib)


def matmul_peak_flops(threads: int | None, *, size: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of this machine (best of ``repeats``), the CPU utilisation yardstick."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def useful_flops(shape, lengths: list[int], last_layer: LastLayer) -> float:
    """Encoder FLOPs of the real tokens only (padding excluded), of a path computing ``last_layer``."""
    return float(sum(shape.encoder_flops(n, last_layer=last_layer) for n in lengths))


class GpuSampler:
    """Samples NVML utilisation and memory in a thread while a configuration runs (GPU only)."""

    def __init__(self, device: str, interval_s: float = 0.1) -> None:
        self._device = device
        self._interval = interval_s
        self._samples: list[tuple[float, float]] = []  # (utilisation percent, memory MiB)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        nvml = nvml_device(self._device)
        if nvml is None:  # not CUDA, no nvidia-ml-py or no driver: report no GPU numbers
            return self
        self._thread = threading.Thread(target=self._sample, args=(nvml,), name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self, nvml: NvmlDevice) -> None:
        while not self._stop.is_set():
            snapshot = nvml.snapshot()
            if snapshot is not None:
                self._samples.append((snapshot.utilization * 100.0, snapshot.memory_used / 2**20))
            self._stop.wait(self._interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean_utilisation(self) -> float | None:
        return float(np.mean([s[0] for s in self._samples])) if self._samples else None

    @property
    def peak_memory_mib(self) -> float | None:
        return max(s[1] for s in self._samples) if self._samples else None
