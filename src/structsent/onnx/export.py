"""Export a checkpoint to ONNX: graph export, ONNX Runtime's BERT fusions, dynamic int8.

Int8 quantizes the encoder's projections only (weights per output channel, in 7 bits;
activations per batch), after smoothing their inputs (``structsent.int8``: calibrated on the
packaged sample reviews, the same recipe as torch int8), and keeps in fp32 what is cheap and
sensitive: the embeddings, the feed-forward down-projection of every layer, the pooler and the
classifier head (see ``quantize_graph``).

The written directory is self-describing: ``model.onnx`` (dynamic batch and sequence axes),
the tokenizer files and a ``config.json`` with ``id2label``, so ``structsent.load(DIR)`` runs it;
``model.onnx.blake2b`` records the graph's digest, which every load checks.
An export given validation texts is checked against the fp32 PyTorch reference
(``validate.compare_with_reference``) and the numbers are written to ``export_report.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..config import Precision
from ..errors import ConfigError, ModelFormatError, OutputWriteError, require
from ..io.paths import path_problem
from ..lines import is_utf8_text, one_line
from ..models.checkpoint import TOKENIZER_FILES, hf_config
from ..models.onnx import DIGEST_FILE, EXPORT_FORMAT_VERSION, MODEL_FILE, ONNX_CONFIG_KEY, file_digest
from ..staging import abandoned, remove_abandoned, remove_staging_path, staging_name, take_mode_and_group
from .validate import AccuracyReport, compare_with_reference

OPSET = 17
REPORT_FILE = "export_report.json"
EXPORT_PRECISIONS = (Precision.FP32, Precision.INT8)
# The encoder projections int8 computes, by the module names that modeling.exportable gives the
# MatMuls ("/layers.0/ffn_in/MatMul"); the fused Attention operators (Q/K/V) are quantized too.
# The last layer computes its query and everything after attention at [CLS] only: of its
# products, only keys and values run over every token.
INT8_PROJECTIONS = ("query", "key", "value", "attn_out", "ffn_in")
INT8_LAST_LAYER_PROJECTIONS = ("key", "value")


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
class ExportReport:
    directory: Path
    options: ExportOptions
    fused_operators: dict[str, int]
    quantized_operators: dict[str, int]  # int8 operators by type (empty for fp32)
    seconds: float
    accuracy: AccuracyReport | None

    def to_dict(self) -> dict:
        return {
            "precision": self.options.precision.value,
            "optimized": self.options.optimize,
            "fused_operators": self.fused_operators,
            "quantized_operators": self.quantized_operators,
            "seconds": round(self.seconds, 2),
            "accuracy": dataclasses.asdict(self.accuracy) if self.accuracy else None,
        }


def export_checkpoint(
    checkpoint,
    out_dir: Path,
    options: ExportOptions,
    *,
    validation_texts: Sequence[str] | None = None,
    validation_source: str = "given texts",
    overwrite: bool = False,
) -> ExportReport:
    """Write ``checkpoint`` as a self-describing ONNX directory; check it against torch fp32.

    ``out_dir`` is checked before anything is written (``check_output_directory``). The export is
    written to a new sibling directory and renamed into place when complete, so an interrupted or
    failed export leaves ``out_dir`` as it was, never a mix of two exports; ``overwrite`` replaces
    an earlier export there.
    """
    require("onnxruntime", "onnx")
    require("onnx", "onnx")
    if checkpoint.is_exported:
        raise ConfigError(f"{checkpoint.directory} already holds an ONNX model; export its source checkpoint")
    target = check_output_directory(out_dir, checkpoint.directory, overwrite=overwrite)
    # An existing empty directory is written into (staged inside it), never replaced: it may be a
    # mount point (a container's volume: renaming onto it fails) or carry its own mode and group.
    into_empty = target.is_dir() and not any(target.iterdir())
    staging = _new_inside(target) if into_empty else _new_sibling(target, "export")
    try:
        report = _export_into(checkpoint, staging, target, options, validation_texts, validation_source)
        if into_empty:
            _move_files_into(staging, target)
        else:
            _move_into_place(staging, target, overwrite=overwrite)
    except OSError as err:  # a full disk, a quota: nothing was replaced
        raise OutputWriteError(f"cannot write the export to {target.parent}: {err.strerror or err} (errno "
                               f"{err.errno}); nothing was replaced at {target}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def check_output_directory(out_dir, source: Path, *, overwrite: bool = False) -> Path:
    """The directory, resolved, that an export of the checkpoint in ``source`` may be written to.

    A ConfigError (and nothing written) for: an empty path; the source directory itself, a
    directory inside it or one holding it (links followed); an existing file; a parent that is
    missing or not a directory; an existing non-empty directory, unless ``overwrite`` and it
    holds an earlier ONNX export (any other directory's files are never replaced).
    """
    if str(out_dir).strip() == "":
        raise ConfigError("export output: an empty path; name the directory to write the ONNX model to")
    if isinstance(out_dir, str) and out_dir == "-":  # elsewhere standard output; a directory named "-" is ./-
        raise ConfigError("export output -: an export is a directory, not standard output; name the directory "
                          "to write the ONNX model to (./- for one named '-')")
    given = Path(out_dir)
    try:
        return _checked_output_directory(given, Path(source).resolve(), overwrite=overwrite)
    except (OSError, RuntimeError) as err:  # a loop of links, a name too long, a part that is a file
        raise ConfigError(f"export output {given}: {path_problem(err)}") from err


def _checked_output_directory(given: Path, source: Path, *, overwrite: bool) -> Path:
    target = given.resolve()
    if not is_utf8_text(str(target)):  # ONNX Runtime takes paths as UTF-8 text: it refused with a traceback
        raise ConfigError(f"export output {one_line(str(given))}: ONNX Runtime cannot open files under a name that "
                          "is not UTF-8 (its bytes written \\xNN here); choose a UTF-8 name")
    if target == source or source in target.parents or target in source.parents:
        raise ConfigError(f"export output {given}: the source checkpoint's directory {source} is in it, or "
                          "it in the source's; choose a directory apart from the checkpoint")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export output {given}: exists and is not a directory")
    if not target.parent.is_dir():
        raise ConfigError(f"export output {given}: its parent directory {target.parent} does not exist "
                          "or is not a directory")
    _tidy_after_killed_exports(target)
    if target.is_dir():
        remove_abandoned(target, INSIDE_PREFIX)  # staging of an export killed inside it (kill -9)
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ConfigError(f"export output {given}: the directory is not empty; choose another, "
                              "or pass --overwrite to replace an earlier export there")
        foreign = _not_written_by_an_export(target)
        if not _holds_export(target) and not _remains_of_an_export(target):
            if not foreign:  # a user's own vocab.txt or model.onnx, say: named, as other files are
                raise ConfigError(f"export output {given}: holds {', '.join(_names_in(target))} but no earlier "
                                  f"export's config.json, {DIGEST_FILE} or {REPORT_FILE}; --overwrite replaces "
                                  "earlier exports only: move them elsewhere first")
            raise ConfigError(f"export output {given}: not empty and not an ONNX export (no config.json "
                              f"with {ONNX_CONFIG_KEY!r}); --overwrite replaces earlier exports only")
        if foreign:
            raise ConfigError(f"export output {given}: holds {', '.join(foreign)}, which no export writes; "
                              "--overwrite would delete them with the earlier export: move them elsewhere first")
    return target


PREVIOUS_ROLE = "previous"


def _tidy_after_killed_exports(target: Path) -> None:
    """What exports to ``target`` killed on this host (kill -9, a power cut) left beside it: their
    staging is removed; an earlier export that an --overwrite had moved aside as
    ``.NAME.previous-HOST-PID-*`` (killed between its two renames) is put back at ``target`` if
    nothing took its place, else removed (the new export landed). It stayed hidden, and ``target``
    missing, for good."""
    remove_abandoned(target.parent, f".{target.name}.export-")
    for previous in sorted(abandoned(target.parent, f".{target.name}.{PREVIOUS_ROLE}-")):
        if not os.path.lexists(target) and previous.is_dir() and not previous.is_symlink():
            previous.rename(target)
        else:
            remove_staging_path(previous)


def _not_written_by_an_export(directory: Path, shown: int = 5) -> list[str]:
    """Names in an export directory that an export does not write (a user's notes, results...)."""
    ours = {MODEL_FILE, DIGEST_FILE, "config.json", REPORT_FILE, *TOKENIZER_FILES}
    return _names_in(directory, shown, lambda name: name not in ours)


def _names_in(directory: Path, shown: int = 5, kept=lambda name: True) -> list[str]:
    names = sorted(entry.name for entry in directory.iterdir() if kept(entry.name))
    return names[:shown] + ([f"{len(names) - shown} more"] if len(names) > shown else [])


# Written by an export only: files of an export's names without either (a user's own vocab.txt and
# model.onnx) were taken for the remains of one, and --overwrite replaced them without a word.
EXPORT_MARKS = (DIGEST_FILE, REPORT_FILE)


def _remains_of_an_export(directory: Path) -> bool:
    """Files an export writes, and nothing else, among them its mark (``EXPORT_MARKS``), but no
    config.json: an export stopped while its files were moved in (the digest first, config.json
    last), which --overwrite may replace."""
    names = {entry.name for entry in directory.iterdir()}
    return (bool(names & set(EXPORT_MARKS)) and "config.json" not in names
            and not _not_written_by_an_export(directory))


def _holds_export(directory: Path) -> bool:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and ONNX_CONFIG_KEY in config


SCRATCH_PREFIX = "structsent-export-"


def _new_sibling(target: Path, role: str) -> Path:
    """A new hidden directory next to ``target`` (same file system: renames are atomic)."""
    for _ in range(100):
        sibling = target.with_name(staging_name(f".{target.name}.{role}-") + secrets.token_hex(4))
        try:
            sibling.mkdir()
            return sibling
        except FileExistsError:
            continue
        except OSError as err:
            raise ConfigError(f"export output {target}: cannot write in {target.parent} ({err.strerror})") from None
    raise ConfigError(f"export output {target}: cannot find a free name next to it")


INSIDE_PREFIX = ".export-"


def _new_inside(target: Path) -> Path:
    """A new hidden staging directory inside the empty directory ``target`` (its own file system)."""
    staging = target / (staging_name(INSIDE_PREFIX) + secrets.token_hex(4))
    try:
        staging.mkdir()
    except OSError as err:
        raise ConfigError(f"export output {target}: cannot write in it ({err.strerror})") from None
    return staging


def _move_files_into(staging: Path, target: Path) -> None:
    """Move the finished export's files from ``staging`` into ``target``, config.json last (the file
    that makes a directory an export). ``target`` must hold nothing else: what another program put
    there while the export ran is never mixed with it; the export is discarded."""
    if os.path.lexists(target) and not target.is_dir() or not staging.is_dir():
        raise ConfigError(f"export output {target}: it was removed or replaced while the export ran; nothing "
                          "was replaced and the export was discarded")
    if any(entry != staging for entry in target.iterdir()):
        raise ConfigError(f"export output {target}: files were put in it while the export ran; nothing was "
                          "replaced and the export was discarded")
    _move_export_files(staging, target)


def _move_export_files(staging: Path, target: Path) -> None:
    """Move an export's files from ``staging`` into ``target``, config.json last (the file that makes
    a directory an export): an interrupted move is never read as a whole export; the graph's digest
    first, so that what a stopped move leaves bears an export's mark (``_remains_of_an_export``). A
    rename where both are on one file system, else a copy."""
    names = sorted((entry.name for entry in staging.iterdir()),
                   key=lambda name: (name == "config.json", name != DIGEST_FILE))
    for name in names:
        shutil.move(str(staging / name), str(target / name))


def _move_into_place(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished export onto ``target``; an earlier export there is moved aside first.

    ``target`` is checked again here: what another program put there while the export ran (files
    in a directory that was empty, a file in its place) is never replaced; the export is discarded.
    """
    if os.path.lexists(target) and not target.is_dir():
        raise ConfigError(f"export output {target}: something other than a directory was put there while the "
                          "export ran; nothing was replaced and the export was discarded")
    if target.is_dir() and any(target.iterdir()):
        if not (overwrite and (_holds_export(target) or _remains_of_an_export(target))) or \
                _not_written_by_an_export(target):
            raise ConfigError(f"export output {target}: files were put in it while the export ran; nothing was "
                              "replaced and the export was discarded")
        previous = _new_sibling(target, PREVIOUS_ROLE)
        previous.rmdir()
        take_mode_and_group(staging, target.stat())  # the directory's own, not a new one's
        try:
            try:
                target.rename(previous)
            except OSError as err:
                if err.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
                    raise
                _replace_files_in(target, staging)  # a mount point (a volume) cannot be renamed
                return
            staging.rename(target)
        except BaseException:
            _put_previous_back(previous, target)
            raise
        shutil.rmtree(previous, ignore_errors=True)
    else:
        staging.replace(target)  # onto nothing, or onto an empty directory


def _put_previous_back(previous: Path, target: Path) -> None:
    """A stop (Ctrl-C, SIGTERM) or failure between moving the earlier export aside and renaming the
    new one onto ``target``: the earlier one is renamed back. It stayed under its hidden name, and
    ``target`` missing, though an interrupted export is to leave the earlier one whole."""
    if os.path.lexists(previous) and not os.path.lexists(target):
        previous.rename(target)


def _replace_files_in(target: Path, staging: Path) -> None:
    """An earlier export in a directory that cannot be renamed (a mount point, a directory whose
    parent is not writable): the new files are first copied into a hidden directory inside it (the
    slow part: another file system), while the earlier export stays whole; then the two are swapped
    by renames there (the earlier files set aside, config.json first; the new ones moved in,
    config.json last). A stop during the swap puts the earlier export back. (The earlier export
    was deleted before the copy: an interrupted --overwrite left neither.)"""
    made: list[Path] = []  # removed however the replacement ends (a signal between the two made one)
    swapped = False
    try:
        incoming = _new_inside(target)
        made.append(incoming)
        outgoing = _new_inside(target)
        made.append(outgoing)
        _move_export_files(staging, incoming)
        _swap_export_files(target, incoming, outgoing)
        swapped = True
    finally:
        for index, directory in enumerate(made):
            if index == 1 and not swapped and any(directory.iterdir()):  # (1: outgoing)
                continue  # earlier files a stopped put-back left there: kept, never deleted
            shutil.rmtree(directory, ignore_errors=True)


def _swap_export_files(target: Path, incoming: Path, outgoing: Path) -> None:
    """Renames within ``target``: its export files to ``outgoing`` (config.json first), then those of
    ``incoming`` into it (config.json last); on any failure or stop, the earlier ones are put back."""
    earlier = sorted((entry.name for entry in target.iterdir() if entry not in (incoming, outgoing)),
                     key=lambda name: name != "config.json")
    try:
        for name in earlier:
            (target / name).rename(outgoing / name)
        _move_export_files(incoming, target)
    except BaseException:
        for name in sorted((entry.name for entry in outgoing.iterdir()), key=lambda name: name == "config.json"):
            (target / name).unlink(missing_ok=True)
            (outgoing / name).rename(target / name)
        raise


def _export_into(checkpoint, out_dir: Path, final_dir: Path, options: ExportOptions,
                 validation_texts: Sequence[str] | None, validation_source: str) -> ExportReport:
    started = time.perf_counter()
    model_path = out_dir / MODEL_FILE
    remove_abandoned(Path(tempfile.gettempdir()), SCRATCH_PREFIX)
    with tempfile.TemporaryDirectory(prefix=staging_name(SCRATCH_PREFIX)) as scratch:
        graph = Path(scratch) / "graph.onnx"
        int8 = options.precision is Precision.INT8
        scales = export_graph(checkpoint, graph, smoothed=int8)
        fused: dict[str, int] = {}
        if options.optimize:
            fused = optimize_graph(graph, graph, checkpoint.shape)
        quantized: dict[str, int] = {}
        if int8:
            # After the fusions: a Mul before Q/K/V would keep ONNX Runtime from fusing attention.
            smooth_graph(graph, scales, num_layers=checkpoint.shape.num_layers)
            quantized = quantize_graph(graph, graph.with_name("int8.onnx"), fused=options.optimize,
                                       num_layers=checkpoint.shape.num_layers)
            graph = graph.with_name("int8.onnx")
            guard_non_finite(graph)
        shutil.move(str(graph), model_path)
    (out_dir / DIGEST_FILE).write_text(file_digest(model_path), encoding="ascii")  # checked by every load
    write_metadata(checkpoint, out_dir, options)
    accuracy = None
    if validation_texts:
        accuracy = compare_with_reference(checkpoint, out_dir, validation_texts, validation_source)
    report = ExportReport(
        directory=final_dir, options=options, fused_operators=fused, quantized_operators=quantized,
        seconds=time.perf_counter() - started, accuracy=accuracy,
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


_TRACING = threading.Lock()  # torch.onnx.export keeps global state: one trace at a time in a process


def export_graph(checkpoint, path: Path, *, smoothed: bool = False) -> dict:
    """Trace the checkpoint into an fp32 ONNX graph with dynamic batch and sequence axes.

    ``smoothed``: calibrate the int8 recipe's activation smoothing (``structsent.int8``) first,
    fold what folds into the weights (the attention outputs' scales, into the values) and return
    the input scales left to apply to the graph ({(layer, projection): scale}; see ``smooth_graph``).
    """
    import torch

    from ..backends.torch import build_model
    from ..int8 import smooth_encoder
    from ..modeling import exportable

    model = build_model(checkpoint, Precision.FP32, torch.device("cpu"))
    scales = smooth_encoder(model, checkpoint.tokenizer) if smoothed else {}
    model = exportable(model)
    length = min(16, checkpoint.shape.max_position_embeddings)  # a model may hold fewer positions
    ids = torch.full((2, length), checkpoint.tokenizer.cls_id, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, length // 2 + 1:] = 0  # a padded row, so that the mask's path is traced
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "logits": {0: "batch"}}
    with _TRACING, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python scalars, expected here
        torch.onnx.export(
            model, (ids, mask), str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=dynamic,
        )
    return {key: scale.numpy() for key, scale in scales.items()}


def optimize_graph(source: Path, target: Path, shape) -> dict[str, int]:
    """Fuse attention, LayerNorm (with the residual add), bias+GELU and the embeddings."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(source), model_type="bert", num_heads=shape.num_heads, hidden_size=shape.hidden_size
    )
    model.save_model_to_file(str(target))
    return {name: count for name, count in model.get_fused_operator_statistics().items() if count}


def quantize_graph(source: Path, target: Path, *, fused: bool, num_layers: int) -> dict[str, int]:
    """Dynamic int8: weights quantized once, activations per batch at run time.

    Measured on three trained checkpoints of the bundled model's architecture (ISA avx2 +
    avx512_vnni), this recipe moves probabilities about a quarter as much as quantizing every
    MatMul with one scale per tensor, for the same speed:
    - weights get one scale per output channel (a channel with small weights keeps its precision);
    - weights use 7 bits (``reduce_range``), so that the u8 x s8 products summed in pairs by
      AVX2 and AVX-512 without VNNI cannot saturate 16 bits: the file gives the same results on
      every x86 host, at a measured cost of a few hundredths of a percent of agreement;
    - the feed-forward down-projection stays fp32: its input, the GELU output, is 4x wider and
      mostly near zero with a few large values, and one activation scale per batch loses most there;
    - what runs at [CLS] only stays fp32: the last layer past its keys and values, the pooler
      and the classifier head (no time to save, and their errors go straight into the logits);
      so do the embeddings (a lookup, no arithmetic);
    - the quantized projections' inputs are smoothed first (``smooth_graph``), which about
      halves the labels that differ from fp32 on the bundled model, at no measurable speed cost.

    Returns the number of quantized operators by type.
    """
    import onnx

    with _root_logger_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        nodes = int8_nodes(onnx.load(str(source), load_external_data=False).graph, num_layers)
        # The fused operators lack type information the quantizer wants; default them to float.
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else None
        logging.getLogger().setLevel(logging.ERROR)  # its advice about static quantization, on the root logger
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, nodes_to_quantize=nodes, extra_options=extra)
    counts: dict[str, int] = {}
    for node in onnx.load(str(target), load_external_data=False).graph.node:
        if node.op_type in ("MatMulInteger", "QAttention"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """The root logger as the application left it: importing onnxruntime.quantization calls
    logging.basicConfig (a stderr handler at INFO, which then printed every library's INFO lines
    and this package's warnings as "WARNING:structsent.onnx:..."), and its quantizer logs on root."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def smooth_graph(path: Path, scales: dict, *, num_layers: int) -> None:
    """Divide the inputs of the smoothed projections by their scales (one Mul per input tensor)
    and multiply the matching rows of their weights, in place: the same function, evener inputs.

    Applied to the fused graph: each (fused) attention's Q/K/V weight is [input, 3 x hidden], a
    MatMul's weight [input, output], so input channel j is row j either way.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    consumers = projection_nodes(graph, num_layers)
    divided: dict[str, str] = {}  # input tensor -> its smoothed copy
    for (layer, name), scale in sorted(scales.items()):
        nodes = consumers.get((layer, name))
        if not nodes:
            raise ModelFormatError(f"int8 export: found no node computing layers.{layer}.{name} in the exported graph")
        for node in nodes:
            weight = weights[node.input[1]]
            rows = numpy_helper.to_array(weight)
            weight.CopyFrom(numpy_helper.from_array((rows * scale[:, None]).astype(rows.dtype), weight.name))
        for source in {node.input[0] for node in nodes}:
            if source in divided:
                raise ModelFormatError(f"int8 export: {source} feeds two smoothed projections")
            divided[source] = f"{source}_smoothed"
            inverse = f"{source}_inverse_scale"
            graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), inverse))
            first = min(i for i, node in enumerate(graph.node) if source in node.input)  # keeps the order topological
            graph.node.insert(first, helper.make_node("Mul", [source, inverse], [divided[source]],
                                                      name=f"/layers.{layer}/{name}/smoothing/Mul"))
        for node in nodes:
            node.input[0] = divided[node.input[0]]
    onnx.save(model, str(path))


def guard_non_finite(path: Path) -> None:
    """Make a NaN or infinity in any quantized input turn the batch's logits NaN, in place.

    Dynamic int8 quantizes each projection's input with one scale per call: a token holding NaN
    or infinity (a network that overflows fp32 on some text) sets it for the whole batch, and the
    quantized products of every text are then finite garbage, labelled as if computed. Each
    ``DynamicQuantizeLinear`` input is summed (one read: NaN and infinity reach the sum), the
    sums' ``s - s`` (0, or NaN) are added to the logits: a batch that met a non-finite value
    anywhere comes out all NaN, and the engine computes its texts again in halves until the text
    that overflows stands alone and is flagged (runners declare this with ``non_finite_taints_batch``).
    Finite inputs give the same numbers (+ 0). Checking token by token instead, and zeroing bad
    tokens, cost 13% of an int8 batch of the bundled model; this costs 2%.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    guarded = sorted({node.input[0] for node in graph.node if node.op_type == "DynamicQuantizeLinear"})
    if not guarded:
        raise ModelFormatError("int8 export: found no quantized input to guard in the graph")
    flags = []
    for index, source in enumerate(guarded):
        name = f"guard/{index}"
        nodes = [
            helper.make_node("ReduceSum", [source], [f"{name}/sum"], keepdims=0, name=f"{name}/ReduceSum"),
            helper.make_node("Sub", [f"{name}/sum", f"{name}/sum"], [f"{name}/flag"], name=f"{name}/Sub"),
        ]
        producers = [i for i, node in enumerate(graph.node) if source in node.output]
        after = producers[0] + 1 if producers else 0  # a graph input: at the start
        for offset, node in enumerate(nodes):
            graph.node.insert(after + offset, node)  # right after the input is made: the order stays topological
        flags.append(f"{name}/flag")
    (output,) = [o.name for o in graph.output]
    producer = next(node for node in graph.node if output in node.output)
    producer.output[list(producer.output).index(output)] = "guard/unchecked_logits"
    graph.node.extend([
        helper.make_node("Sum", flags, ["guard/flags"], name="guard/Sum"),
        helper.make_node("Add", ["guard/unchecked_logits", "guard/flags"], [output], name="guard/Add"),
    ])
    onnx.save(model, str(path))


def projection_nodes(graph, num_layers: int) -> dict[tuple[int, str], list]:
    """The nodes that compute each layer's Q/K/V and feed-forward input projections.

    Q/K/V: layer k's fused Attention (the k-th in the graph's topological order: layers follow
    one another), or, unfused, its query/key/value MatMuls that read the layer's input (not the
    last layer's query, which reads [CLS] only); the feed-forward input: its MatMul, by name.
    """
    found: dict[tuple[int, str], list] = {}
    for layer, node in enumerate(node for node in graph.node if node.op_type == "Attention"):
        found[layer, "qkv"] = [node]
    products = {}
    for node in graph.node:
        parts = node.name.split("/")  # "/layers.0/ffn_in/MatMul"
        if node.op_type == "MatMul" and len(parts) == 4 and parts[1].startswith("layers."):
            products[int(parts[1].removeprefix("layers.")), parts[2]] = node
    for layer in range(num_layers):
        key = products.get((layer, "key"))
        if key is not None and (layer, "qkv") not in found:
            found[layer, "qkv"] = [products[layer, p] for p in ("query", "key", "value")
                                   if (layer, p) in products and products[layer, p].input[0] == key.input[0]]
        if (layer, "ffn_in") in products:
            found[layer, "ffn_in"] = [products[layer, "ffn_in"]]
    return found


def int8_nodes(graph, num_layers: int) -> list[str]:
    """Names of the nodes int8 computes: fused Attention, and the encoder MatMuls named above."""
    weights = {initializer.name for initializer in graph.initializer}
    last = f"layers.{num_layers - 1}"
    names = []
    for node in graph.node:
        parts = node.name.split("/")  # "/layers.0/ffn_in/MatMul"
        if node.op_type == "MatMul" and node.input[1] in weights and len(parts) >= 3 and parts[1].startswith("layers."):
            wanted = INT8_LAST_LAYER_PROJECTIONS if parts[1] == last else INT8_PROJECTIONS
            if parts[-2] in wanted:
                names.append(node.name)
        elif node.op_type == "Attention":
            names.append(node.name)
    if not names:
        # Names come from the exporter; if they ever change, fail loudly rather than write fp32 as int8.
        raise ModelFormatError("int8 export: found no encoder projection to quantize in the exported graph")
    return names


def write_metadata(checkpoint, out_dir: Path, options: ExportOptions) -> None:
    """config.json (shape, id2label, export options) and the tokenizer files."""
    config = hf_config(checkpoint)
    config[ONNX_CONFIG_KEY] = {
        "model_file": MODEL_FILE,
        "precision": options.precision.value,
        "optimized": options.optimize,
        "opset": OPSET,
        "format_version": EXPORT_FORMAT_VERSION,
        "source": str(checkpoint.directory),
    }
    (out_dir / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    copied = [name for name in TOKENIZER_FILES if (checkpoint.directory / name).is_file()]
    if not any(name in copied for name in ("vocab.txt", "tokenizer.json")):
        raise ModelFormatError(f"{checkpoint.directory}: no vocab.txt or tokenizer.json to copy")
    for name in copied:  # the contents only: the files get the umask's mode, not the source's (maybe private)
        shutil.copyfile(checkpoint.directory / name, out_dir / name)
