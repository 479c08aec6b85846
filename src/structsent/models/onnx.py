"""ONNX directories written by ``structsent export``: model.onnx + config.json + tokenizer files,
and model.onnx.blake2b, the graph's digest, checked at every load (a directory exported before
digests were recorded has none, and loads unchecked).

The shape, labels and tokenizer come from the directory itself; there are no PyTorch weights
(``state_dict`` is empty), so only the ONNX backend runs such a checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from ..errors import ModelFormatError
from ..model_files import model_file_present
from ..tokenize import Tokenizer
from .checkpoint import (
    Checkpoint,
    build_shape,
    check_vocabulary_fits,
    choose_labels,
    config_float,
    config_int,
    config_str,
    holds_weights,
    names_a_file_inside,
    read_json,
)

MODEL_FILE = "model.onnx"
DIGEST_FILE = "model.onnx.blake2b"  # the graph's digest, written with it by every export (and cache entry)
ONNX_CONFIG_KEY = "structsent_onnx"
# Bump when the exported graph changes, so old cache entries are not reused; a directory written
# by a newer structsent (a higher version) may hold a graph this one cannot run, and is refused.
EXPORT_FORMAT_VERSION = 4


@dataclasses.dataclass(frozen=True)
class OnnxCheckpoint(Checkpoint):
    """A Checkpoint whose weights live in an ONNX graph."""

    model_file: Path = Path(MODEL_FILE)
    precision: str = "fp32"  # "fp32" or "int8": how the graph was exported
    optimized: bool = False

    @property
    def is_exported(self) -> bool:
        return True


EXPORTED_PRECISIONS = ("fp32", "int8")  # what `structsent export` writes


def is_onnx_directory(directory: Path) -> bool:
    """A config.json that ``structsent export`` wrote (whose graph may be missing), or a model.onnx
    with no PyTorch weights beside it: in a Hugging Face directory the weights are the model, and a
    model.onnx left there (another model's, perhaps) is not read."""
    try:
        if ONNX_CONFIG_KEY in read_json(directory / "config.json"):
            return True
    except ModelFormatError:
        pass  # no or broken config.json: the other loaders say what is wrong
    return not holds_weights(directory) and model_file_present(directory / MODEL_FILE)


def load_onnx_directory(directory: Path) -> OnnxCheckpoint:
    """Read an exported directory's config, labels and tokenizer (the graph is opened by the backend)."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    shape = _shape_from(config, directory)
    export = config.get(ONNX_CONFIG_KEY) or {}
    if not isinstance(export, dict):
        raise ModelFormatError(f"{directory / 'config.json'}: {ONNX_CONFIG_KEY} must be an object, got {export!r}")
    _check_format_version(export, directory)
    precision = export.get("precision", "fp32")
    if precision not in EXPORTED_PRECISIONS:
        raise ModelFormatError(f"{directory / 'config.json'}: {ONNX_CONFIG_KEY}.precision must be one of "
                               f"{', '.join(EXPORTED_PRECISIONS)}, got {precision!r}")
    model_file = _graph_file(export, directory)
    check_graph_digest(model_file)
    _check_config_fits_graph(shape, precision, model_file, directory)  # before the tokenizer is measured by config.json
    tokenizer = Tokenizer.from_dir(directory)
    check_vocabulary_fits(tokenizer.vocab_size, shape.vocab_size, directory)
    return OnnxCheckpoint(
        directory=directory,
        format="onnx",
        shape=shape,
        labels=choose_labels(config, shape.num_labels, directory, structbert=False),
        state_dict={},
        tokenizer=tokenizer,
        model_file=model_file,
        precision=precision,
        optimized=bool(export.get("optimized", False)),
    )


def digest_file(model_file: Path) -> Path:
    """Where the digest of the graph ``model_file`` is recorded: beside it (model.onnx.blake2b)."""
    return model_file.with_name(model_file.name + ".blake2b")


def file_digest(path: Path) -> str:
    """The BLAKE2b digest (16 bytes, hex) of ``path``'s bytes, read a few MiB at a time."""
    digest = hashlib.blake2b(digest_size=16)
    feed_file(digest, path)
    return digest.hexdigest()


def feed_file(digest, path: Path) -> None:
    """Hash ``path``'s bytes into ``digest``, a few MiB at a time."""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)


def check_graph_digest(model_file: Path) -> None:
    """Refuse a graph that does not match the digest its export recorded (a flipped bit gives wrong
    labels, not an error); a directory exported before digests were recorded has none, and loads."""
    recorded_in = digest_file(model_file)
    if not os.path.lexists(recorded_in):
        return
    if not recorded_in.is_file():  # a directory, a link to nothing: no digest can be read from it
        raise ModelFormatError(f"{recorded_in}: the graph's recorded digest is not a readable file; copy the export "
                               "again, or export the model again (structsent export MODEL -o DIR)")
    try:
        recorded = recorded_in.read_text(encoding="ascii").strip()
        actual = file_digest(model_file)
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{model_file}: cannot check it against its recorded digest ({err})") from err
    if actual != recorded:
        raise ModelFormatError(
            f"{model_file}: does not match the digest recorded at export ({recorded_in.name}): the file is damaged; "
            "copy the export again, or export the model again (structsent export MODEL -o DIR)"
        )


# The graph's own embedding tables, named after modeling.Embeddings' parameters by the export.
GRAPH_WORD_EMBEDDINGS = "embeddings.word.weight"
GRAPH_POSITION_EMBEDDINGS = "embeddings.position.weight"


# Operators only a quantized (int8) graph holds: those ONNX Runtime's dynamic quantization writes,
# before and after fusion.
INT8_OPERATORS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "QAttention", "DynamicQuantizeMatMul",
                            "MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "QuantizeLinear"})


@dataclasses.dataclass(frozen=True)
class GraphFacts:
    """What config.json claims that the graph itself can confirm (None: not known, the graph unread)."""

    words: int | None = None  # rows of the token embedding table
    width: int | None = None  # its columns: the hidden size
    positions: int | None = None  # rows of the position table
    int8: bool | None = None  # whether it holds quantized operators
    outputs: int | None = None  # the logits' width, where the graph states it: one per label


def _check_config_fits_graph(shape, precision: str, model_file: Path, directory: Path) -> None:
    """config.json's claims, against the graph: ids past the graph's rows would be read out of
    bounds, positions past its table fail mid-job, and a precision or width the graph does not
    have is described wrongly (info(), the int8 guards). The export writes these from the graph:
    any other value is config.json's damage, and measuring the tokenizer against it would blame
    the vocabulary."""
    facts = _graph_facts(model_file)
    claimed = f"{directory / 'config.json'}:"
    belongs = "config.json belongs to another export"
    if facts.words is not None and shape.vocab_size != facts.words:
        raise ModelFormatError(f"{claimed} vocab_size is {shape.vocab_size} but the graph {model_file.name} holds "
                               f"{facts.words} token embeddings; {belongs}")
    if facts.width is not None and shape.hidden_size != facts.width:
        raise ModelFormatError(f"{claimed} hidden_size is {shape.hidden_size} but the graph {model_file.name}'s "
                               f"embeddings are {facts.width} wide; {belongs}")
    if facts.positions is not None and shape.max_position_embeddings > facts.positions:
        raise ModelFormatError(f"{claimed} max_position_embeddings is {shape.max_position_embeddings} but the "
                               f"graph {model_file.name} holds {facts.positions} positions; {belongs}")
    if facts.outputs is not None and shape.num_labels != facts.outputs:
        raise ModelFormatError(f"{claimed} num_labels is {shape.num_labels} but the graph {model_file.name} gives "
                               f"{facts.outputs} outputs per text; {belongs}")
    if facts.int8 is not None and facts.int8 != (precision == "int8"):
        held = "int8 operators" if facts.int8 else "no int8 operator"
        raise ModelFormatError(f"{claimed} {ONNX_CONFIG_KEY}.precision is {precision} but the graph "
                               f"{model_file.name} holds {held}; {belongs}")


def _graph_facts(model_file: Path) -> GraphFacts:
    """The graph's embedding tables and operators; nothing where onnx is missing or the graph
    unreadable (the runtime names an unreadable graph when it opens it) or made by another
    exporter (no tables of the names this export writes)."""
    try:
        import onnx
    except ImportError:
        return GraphFacts()
    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - protobuf raises many types; the backend reports the file
        return GraphFacts()
    tables = {table.name: tuple(table.dims) for table in graph.initializer
              if table.name in (GRAPH_WORD_EMBEDDINGS, GRAPH_POSITION_EMBEDDINGS)}
    if not tables:
        return GraphFacts()
    words, positions = tables.get(GRAPH_WORD_EMBEDDINGS, ()), tables.get(GRAPH_POSITION_EMBEDDINGS, ())
    return GraphFacts(words=words[0] if words else None, width=words[1] if len(words) == 2 else None,
                      positions=positions[0] if positions else None,
                      int8=any(node.op_type in INT8_OPERATORS for node in graph.node),
                      outputs=_logits_width(graph))


def _logits_width(graph) -> int | None:
    """The static width of the graph's one output (texts x labels), or None where it is not stated."""
    if len(graph.output) != 1:
        return None
    dims = graph.output[0].type.tensor_type.shape.dim
    return dims[1].dim_value or None if len(dims) == 2 and dims[1].HasField("dim_value") else None


def _check_format_version(export: dict, directory: Path) -> None:
    version = export.get("format_version", EXPORT_FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ModelFormatError(
            f"{directory / 'config.json'}: {ONNX_CONFIG_KEY}.format_version must be a positive integer, got {version!r}"
        )
    if version > EXPORT_FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory}: exported with format_version {version}, newer than this structsent reads "
            f"({EXPORT_FORMAT_VERSION}); upgrade structsent, or export the source model again with this one"
        )


def _graph_file(export: dict, directory: Path) -> Path:
    """The graph the export names, which must lie inside the directory (never a file elsewhere)."""
    name = export.get("model_file", MODEL_FILE)
    source = directory / "config.json"
    if not isinstance(name, str) or not name:
        raise ModelFormatError(f"{source}: {ONNX_CONFIG_KEY}.model_file must be a file name, got {name!r}")
    if not names_a_file_inside(name):
        raise ModelFormatError(
            f"{source}: {ONNX_CONFIG_KEY}.model_file {name!r} is not a file inside {directory}; "
            f"an exported directory holds its own graph (normally {MODEL_FILE!r})"
        )
    path = directory / os.path.normpath(name)
    if not model_file_present(path):
        raise ModelFormatError(
            f"{directory}: no {name} (the exported ONNX graph); copy the whole export directory, "
            "or export the model again (structsent export MODEL -o DIR)"
        )
    return path


def _shape_from(config: dict, directory: Path):
    source = directory / "config.json"
    id2label = config.get("id2label")
    return build_shape(
        source,
        vocab_size=config_int(config, "vocab_size", source),
        hidden_size=config_int(config, "hidden_size", source),
        num_layers=config_int(config, "num_hidden_layers", source),
        num_heads=config_int(config, "num_attention_heads", source),
        intermediate_size=config_int(config, "intermediate_size", source),
        max_position_embeddings=config_int(config, "max_position_embeddings", source, default=512),
        type_vocab_size=config_int(config, "type_vocab_size", source, default=2),
        layer_norm_eps=config_float(config, "layer_norm_eps", source, default=1e-12),
        hidden_act=config_str(config, "hidden_act", source, default="gelu"),
        # The graph's width is checked against the labels by the warm-up batch at load.
        num_labels=config_int(config, "num_labels", source,
                              default=len(id2label) if isinstance(id2label, dict) and id2label else 2),
    )
