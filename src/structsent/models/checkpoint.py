"""What every on-disk format is loaded into: shape, labels, weights and tokenizer."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import warnings
from pathlib import Path

from ..errors import ModelFormatError
from ..lines import is_utf8_text, why_unprintable
from ..model_files import model_file_present
from ..tokenize import Tokenizer
from .shape import BertShape

STRUCTBERT_SENTIMENT_LABELS = ("负面", "正面")  # 0 = negative, 1 = positive
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
# Tensors a real checkpoint may carry that inference does not use: index buffers, the
# pre-training (MLM/NSP) heads, batch-norm counters. Any other tensor must be used (see below).
_IGNORED = re.compile(
    r"(position_ids$|token_type_ids$|cls\.predictions\.|cls\.seq_relationship\.|num_batches_tracked$)"
)
_HEAD_PREFIXES = ("classifier.", "head.classifier.", "head.", "cls_head.")
_ENCODER_PREFIXES = ("bert.", "encoder.", "structbert.", "model.bert.", "model.encoder.", "model.", "")


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def hf_config(checkpoint: Checkpoint) -> dict:
    """The checkpoint's Hugging Face ``config.json`` (BertForSequenceClassification), whatever
    format it was read from: what an ONNX export and a converted copy write."""
    shape = checkpoint.shape
    return {
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
    }


def write_hf_directory(checkpoint: Checkpoint, directory: Path) -> None:
    """The checkpoint as a Hugging Face directory (config.json, model.safetensors, its tokenizer
    files), for tools that read only that format (transformers.pipeline, for a ModelScope one)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config(checkpoint), ensure_ascii=False, indent=2),
                                           encoding="utf-8")
    tensors = {name: tensor.contiguous() for name, tensor in checkpoint.state_dict.items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (checkpoint.directory / name).is_file():
            shutil.copy(checkpoint.directory / name, directory / name)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A model ready for a backend: everything read from disk and checked."""

    directory: Path
    format: str  # "huggingface" or "modelscope"
    shape: BertShape
    labels: tuple[str, ...]
    state_dict: dict  # Hugging Face BertForSequenceClassification names, float32 tensors
    tokenizer: Tokenizer

    @property
    def is_exported(self) -> bool:
        """True for an ONNX graph (only ONNX Runtime runs it; it cannot be exported again)."""
        return False


def read_json(path: Path) -> dict:
    if not model_file_present(path):  # (a pipe, which a read would wait on for ever, is refused)
        raise ModelFormatError(f"{path}: missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelFormatError(f"{path}: missing") from err
    except (OSError, ValueError, RecursionError) as err:  # bad bytes, bad JSON, a huge number, deep nesting
        raise ModelFormatError(f"{path}: not valid JSON ({type(err).__name__}: {err})") from err
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return value


WEIGHT_FILES = (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin"))


def holds_weights(directory: Path) -> bool:
    """Whether ``directory`` holds PyTorch weights (or their shard index) under a standard name."""
    return any(model_file_present(directory / name) for names in WEIGHT_FILES for name in names)


def find_weights(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors preferred, and a whole file before
    a shard index (as transformers chooses, so that both read the same weights where both are)."""
    chosen = _chosen_weights(directory)
    if chosen is None:
        raise ModelFormatError(
            f"{directory}: no model.safetensors or pytorch_model.bin; copy the checkpoint's weights here"
        )
    return chosen[1]


def weight_files_read(directory: Path) -> list[Path]:
    """Every file a load reads for the weights: ``find_weights``' files, after the shard index it
    read them by; none where the directory holds no weights."""
    chosen = _chosen_weights(directory)
    if chosen is None:
        return []
    index, weights = chosen
    return weights if index is None else [index, *weights]


def _chosen_weights(directory: Path) -> tuple[Path | None, list[Path]] | None:
    """(the shard index or None, the weight files) of the format a load takes, or None."""
    for index_name, single in WEIGHT_FILES:
        if model_file_present(directory / single):
            return None, [directory / single]
        index = directory / index_name
        if model_file_present(index):
            return index, [directory / shard for shard in _shards(read_json(index), index)]
    return None


def names_a_file_inside(name: object) -> bool:
    """Whether ``name`` is a relative path that stays inside the directory it is read from. A
    lexical test, not resolve(): hub caches link a snapshot's files to blobs stored elsewhere."""
    if not isinstance(name, str) or not name:
        return False
    relative = os.path.normpath(name)
    return not (os.path.isabs(relative) or relative in (".", "..") or relative.startswith(".." + os.sep))


def _shards(index: object, source: Path) -> list[str]:
    """The weight files a sharded checkpoint's index names: file names inside its directory."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFormatError(f"{source}: no weight_map of tensor names to shard files; the index is damaged, "
                               "download it again")
    shards = sorted(set(weight_map.values()), key=str)
    for shard in shards:
        if not names_a_file_inside(shard):
            raise ModelFormatError(f"{source}: shard {shard!r} is not a file inside {source.parent}; the index is "
                                   "damaged, download it again")
        model_file_present(source.parent / shard)  # a missing shard is named when it is read
    return shards


def read_weights(files: list[Path]) -> dict:
    """Read tensors from safetensors or PyTorch files, as float32 on the CPU."""
    import torch

    tensors: dict = {}
    for path in files:
        part: object
        try:
            if path.suffix == ".safetensors":
                part = _safetensors(path)
            else:
                with warnings.catch_warnings():  # torch's advice on a plain pickle's protocol ("file an issue"):
                    warnings.simplefilter("ignore", UserWarning)  # the error below says what the file is
                    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
                part = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
        except FileNotFoundError as err:
            raise ModelFormatError(f"{path}: missing weight file") from err
        except Exception as err:  # corrupt archives raise many unrelated types
            reason = _weights_only_reason(err)
            if reason and reason.startswith("Unsupported operand"):  # not torch.save's format: a plain pickle?
                _refuse_a_plain_pickle(path, err)
            code = re.search(r"GLOBAL ([\w.]+)", reason or "")
            if code:
                raise ModelFormatError(
                    f"{path}: not a plain PyTorch state dict: it names {code.group(1)}, code rather than tensors; "
                    "only tensors are loaded: save the weights as a state dict or as safetensors"
                ) from err
            raise ModelFormatError(
                f"{path}: cannot read weights ({type(err).__name__}: {reason or first_line(err)}); the file is "
                "corrupt or truncated (or a Git LFS pointer in place of the weights), download it again"
            ) from err
        if not isinstance(part, dict):
            raise ModelFormatError(f"{path}: expected a state dict, got {type(part).__name__}")
        for key, value in part.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value.float() if value.is_floating_point() else value
    return tensors


def _safetensors(path: Path) -> dict:
    """A safetensors file's tensors; from its bytes where its path is not UTF-8 text (safetensors takes
    paths as UTF-8: "not valid UTF-8", and the load said the file was corrupt)."""
    from safetensors.torch import load, load_file

    return load_file(str(path)) if is_utf8_text(str(path)) else load(path.read_bytes())


def _refuse_a_plain_pickle(path: Path, err: BaseException) -> None:
    """A ModelFormatError saying what ``path`` is when it is a whole pickle (pickle.dump's, not
    torch.save's), naming the first code it would call; nothing when it is not a pickle."""
    try:
        named = _first_code_named(path)
    except (OSError, ValueError, EOFError):  # pickletools' word for bytes that are no pickle
        return
    if named:
        raise ModelFormatError(
            f"{path}: a plain pickle, not a PyTorch state dict: it names {named}, code rather than tensors; only "
            "tensors are loaded: save the weights with torch.save(model.state_dict()) or as safetensors"
        ) from err
    raise ModelFormatError(
        f"{path}: a plain pickle, not a PyTorch state dict (torch.save's format) or safetensors; save the weights "
        "with torch.save(model.state_dict()) or as safetensors"
    ) from err


_MEMO_PUTS = ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT")
_MEMO_GETS = ("GET", "BINGET", "LONG_BINGET")


def _first_code_named(path: Path) -> str | None:
    """The first module.name that the pickle in ``path`` would import and call, read from its
    opcodes by pickletools (which decodes, never runs, them); None for a pickle that names none.
    ValueError where the bytes are not a pickle."""
    import pickletools

    pushed: collections.deque[str | None] = collections.deque(maxlen=2)  # the last two pushes: strings, or None
    memo: dict[int, str] = {}  # the strings kept in the pickle's memo, by index
    puts = 0
    with path.open("rb") as handle:
        for opcode, arg, _ in pickletools.genops(handle):
            if opcode.name in ("GLOBAL", "INST"):  # protocols 0-3: "module name" is the opcode's argument
                return str(arg).replace(" ", ".", 1)
            if opcode.name == "STACK_GLOBAL":  # protocol 4 and later: the last two strings pushed
                module, name = ([None, None, *pushed])[-2:]
                return f"{module}.{name}" if module and name else "an object by its import path"
            if opcode.name in _MEMO_PUTS:
                index = arg if isinstance(arg, int) else puts  # MEMOIZE: the next index
                puts += 1
                if pushed and pushed[-1] is not None:
                    memo[index] = pushed[-1]
            elif opcode.name in _MEMO_GETS:
                pushed.append(memo.get(arg) if isinstance(arg, int) else None)
            elif opcode.name not in ("PROTO", "FRAME"):
                pushed.append(arg if isinstance(arg, str) and "UNICODE" in opcode.name else None)
    return None


def first_line(text: object) -> str:
    """The first non-empty line of a text or an exception's message."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _weights_only_reason(err: BaseException) -> str | None:
    """The reason torch's weights-only unpickler gives for refusing a file ("Unsupported operand
    118": not a pickle; "Unsupported global: GLOBAL posix.system ...": a pickle that names code),
    or None for other failures. torch opens its message with a paragraph about its defaults that
    advises ``weights_only=False`` (which would run that code): the reason is after it, after
    "WeightsUnpickler error:" in some versions, in the next paragraph in others."""
    text = str(err)
    if not text.startswith("Weights only load failed"):
        return None
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = first_line(text.split(marker, 1)[1])
    else:
        paragraphs = [part.strip() for part in text.split("\n\n")[1:] if part.strip()]
        reason = next((first_line(part) for part in paragraphs if not part.startswith("Check the documentation")), "")
    return reason.split(". ")[0].rstrip(".") or "refused by torch's weights-only unpickler"


def normalise_state_dict(raw: dict, source: Path) -> dict:
    """Rename the variants seen in BERT-family checkpoints to Hugging Face BERT names.

    Handles a ``bert.``/``encoder.``/``structbert.`` prefix (or none), ``gamma``/``beta``
    LayerNorm names, a ``classifier.*`` or ``head.classifier.*`` head, a ``module.`` prefix from
    data-parallel training, and drops ``position_ids`` buffers and pre-training heads.
    """
    tensors: dict = {}
    named_as: dict[str, str] = {}
    for original, value in raw.items():
        key = original.removeprefix("module.")
        if _IGNORED.search(key):
            continue
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if key in tensors:  # one would silently replace the other (which, the order of the file's keys decided)
            raise ModelFormatError(f"{source}: tensors {named_as[key]!r} and {original!r} are both {key!r}; which "
                                   "one the model uses cannot be told")
        tensors[key], named_as[key] = value, original
    prefix = next(
        (p for p in _ENCODER_PREFIXES if f"{p}embeddings.word_embeddings.weight" in tensors), None
    )
    if prefix is None:
        raise ModelFormatError(
            f"{source}: no BERT embeddings found (looked for *embeddings.word_embeddings.weight); "
            "this is not a BERT-family checkpoint"
        )
    head = next((p for p in _HEAD_PREFIXES if f"{p}weight" in tensors and tensors[f"{p}weight"].dim() == 2), None)
    if head is None:
        raise ModelFormatError(
            f"{source}: no classification head (classifier.weight or head.classifier.weight); "
            "this checkpoint is an encoder without a sequence-classification head"
        )
    out, unplaced = {}, []
    for key, value in tensors.items():
        if key.startswith(head):
            out["classifier." + key[len(head):]] = value
        elif key.startswith(prefix):
            out["bert." + key[len(prefix):]] = value
        else:
            unplaced.append(key)
    if unplaced:
        # A tensor outside both the encoder and the head is part of a model structsent would not
        # run (a second head, another encoder): dropping it silently would give wrong labels.
        raise ModelFormatError(
            f"{source}: {describe_keys(unplaced)} belong to neither the encoder ({prefix or 'no prefix'}) "
            f"nor the classification head ({head}); this is not a plain BERT sequence classifier"
        )
    return out


def describe_keys(keys: list[str], shown: int = 3) -> str:
    """A few tensor names for a one-line message: 'tensors a, b, c and 5 more'."""
    names = sorted(keys)
    text = ("tensor " if len(names) == 1 else "tensors ") + ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


# Checkpoints pad their embedding matrix past the vocabulary to a multiple of 64 or 128 rows
# (faster matrix products); more spare rows than that mean the vocab.txt is another model's.
EMBEDDING_PADDING = 128


def check_vocabulary_fits(tokens: int, rows: int, source: Path) -> None:
    """The tokenizer's ids and the embedding rows must be the same vocabulary: every id has a row,
    and no more rows than the vocabulary rounded up to a multiple of EMBEDDING_PADDING."""
    if tokens > rows:
        raise ModelFormatError(
            f"{source}: the tokenizer's ids go up to {tokens - 1} but the embedding matrix has only {rows} rows; "
            "use the vocab.txt that belongs to these weights (a token written twice in vocab.txt takes the "
            "id of its last line)"
        )
    allowed = -(-tokens // EMBEDDING_PADDING) * EMBEDDING_PADDING
    if rows > allowed:
        raise ModelFormatError(
            f"{source}: the tokenizer has {tokens} tokens but the embedding matrix {rows} rows (padding "
            f"up to a multiple of {EMBEDDING_PADDING}, {allowed}, is allowed); the tokenizer files are "
            "incomplete or belong to another model: use the vocab.txt that belongs to these weights"
        )


# -- config.json fields -------------------------------------------------------------------------
_REQUIRED = object()


def config_int(config: dict, field: str, source: Path, default: object = _REQUIRED) -> int:
    """A positive integer field of a model config, or ModelFormatError naming the file and field."""
    value = _config_value(config, field, source, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelFormatError(f"{source}: {field} must be a positive integer, got {value!r}")
    return value


def config_float(config: dict, field: str, source: Path, default: object = _REQUIRED) -> float:
    """A positive, finite number field of a model config (e.g. layer_norm_eps)."""
    value = _config_value(config, field, source, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ModelFormatError(f"{source}: {field} must be a positive number, got {value!r}")
    return float(value)


def config_str(config: dict, field: str, source: Path, default: object = _REQUIRED) -> str:
    value = _config_value(config, field, source, default)
    if not isinstance(value, str):
        raise ModelFormatError(f"{source}: {field} must be a string, got {value!r}")
    return value


def _config_value(config: dict, field: str, source: Path, default: object) -> object:
    value = config.get(field, default)
    if value is _REQUIRED:
        raise ModelFormatError(f"{source}: missing {field!r}")
    return value


def build_shape(source: Path, **fields):
    """A BertShape, with its own consistency errors (unknown activation...) naming ``source``."""
    try:
        return BertShape(**fields)
    except ModelFormatError as err:
        raise ModelFormatError(f"{source}: {err}") from err


# -- labels -------------------------------------------------------------------------------------
def choose_labels(config: dict, num_labels: int, directory: Path, *, structbert: bool) -> tuple[str, ...]:
    """The labels the model's files declare: config.json's id2label (unless it only numbers them,
    LABEL_n), label_mapping.json, configuration.json's model.label2id or model.id2label. Where two
    declare different labels, a ModelFormatError: the two libraries that read these directories
    take them in opposite orders (transformers id2label, ModelScope's pipeline the label mapping
    first), so a silent choice swapped every label for one of them. Where none does: StructBERT's
    sentiment pair for a two-output StructBERT or ModelScope model, else the numbered labels
    (id2label's own, else LABEL_0..n-1, as transformers names them).

    ``num_labels`` is the number of the model's outputs (the classifier's rows). A declaration that
    does not name exactly those outputs is a ModelFormatError: a label list that does not fit the
    weights would put the wrong name on every result.
    """
    config_file = directory / "config.json"
    if num_labels < 2:
        raise ModelFormatError(
            f"{directory}: the classifier has {num_labels} output; labelling needs one output per label (at least "
            "two): a regression head gives a number, not a label"
        )
    declared = config_int(config, "num_labels", config_file, default=num_labels)
    if declared != num_labels:
        raise ModelFormatError(
            f"{config_file}: num_labels is {declared} but the classifier has {num_labels} outputs; "
            "config.json and the weights come from different models"
        )
    id2label = config.get("id2label")
    numbered = _labels_by_id(id2label, num_labels, config_file, "id2label") if id2label else None
    declarations = _declared_labels(directory, num_labels, config, numbered)
    if declarations:
        (source, labels), *others = declarations
        for other_source, other in others:
            if other != labels:
                raise ModelFormatError(
                    f"{directory}: {source} names the outputs {list(labels)}, {other_source} {list(other)}; which "
                    "names are meant cannot be told (transformers and ModelScope read these files in different "
                    "orders): make them agree"
                )
        return labels
    if num_labels == 2 and structbert:
        return STRUCTBERT_SENTIMENT_LABELS
    return numbered or tuple(f"LABEL_{i}" for i in range(num_labels))


def _declared_labels(directory: Path, num_labels: int, config: dict,
                     numbered: tuple[str, ...] | None) -> list[tuple[str, tuple[str, ...]]]:
    """(where, labels) of every file that names the outputs, each read as the library that reads it
    reads it: config.json's id2label (``numbered``; its label2id where it has no id2label),
    label_mapping.json, configuration.json's model. and preprocessor. label2id and id2label.
    A declaration that only numbers the outputs (LABEL_0, LABEL_1) names nothing."""
    declarations = []
    if numbered:
        declarations.append(("config.json's id2label", numbered))
    elif config.get("label2id"):
        declarations.append(("config.json's label2id", _labels_from_mapping(config["label2id"], num_labels,
                                                                            directory / "config.json", "label2id")))
    mapping_file = directory / "label_mapping.json"
    if model_file_present(mapping_file):
        declarations.append(("label_mapping.json", _labels_from_mapping(read_json(mapping_file), num_labels,
                                                                        mapping_file)))
    pipeline_file = directory / "configuration.json"
    pipeline = read_json(pipeline_file) if model_file_present(pipeline_file) else {}
    for section in ("model", "preprocessor"):
        for field in ("label2id", "id2label"):
            given = pipeline.get(section, {}).get(field) if isinstance(pipeline.get(section), dict) else None
            if given:
                name = f"{section}.{field}"
                declarations.append((f"configuration.json's {name}",
                                     _labels_from_mapping(given, num_labels, pipeline_file, name)))
    return [(where, labels) for where, labels in declarations
            if not all(_GENERIC_LABEL.match(label) for label in labels)]


def _labels_by_id(id_map: object, num_labels: int, source: Path, field: str) -> tuple[str, ...]:
    """The label names of ids 0..num_labels-1 from a {id: name} mapping (ids may be strings of digits)."""
    example = '{"0": "负面", "1": "正面"}'
    if not isinstance(id_map, dict):
        raise ModelFormatError(
            f"{source}: {field} must map ids to label names, e.g. {example}; got a {type(id_map).__name__}"
        )
    by_id: dict[int, str] = {}
    for key, name in id_map.items():
        label_id = _label_id(key)
        if label_id is None or not isinstance(name, str) or not name:
            raise ModelFormatError(
                f"{source}: {field} must map integer ids to label names, e.g. {example}; "
                f"got {key!r}: {name!r}"
            )
        if not is_utf8_text(name):  # a lone surrogate escape: no output (CSV, JSON, the export) can write it
            raise ModelFormatError(f"{source}: {field} names label {label_id} {name!r}, which holds a lone UTF-16 "
                                   "surrogate escape, not a character")
        unprintable = why_unprintable(name)
        if unprintable:  # printed in summaries, written as column names
            raise ModelFormatError(f"{source}: {field} names label {label_id} {name!r}, which {unprintable}; a label "
                                   "is a name to print and to write as a column")
        if label_id in by_id:
            raise ModelFormatError(f"{source}: {field} gives id {label_id} twice ({key!r}); which name is meant "
                                   "cannot be told")
        by_id[label_id] = name
    if len(by_id) != num_labels:
        raise ModelFormatError(
            f"{source}: {field} names {len(by_id)} labels but the classifier has {num_labels} outputs; "
            "the labels and the weights come from different models"
        )
    if sorted(by_id) != list(range(num_labels)):
        raise ModelFormatError(f"{source}: {field} ids must be 0..{num_labels - 1}, got {sorted(by_id)}")
    labels = tuple(by_id[i] for i in range(num_labels))
    if len(set(labels)) != num_labels:
        raise ModelFormatError(f"{source}: {field} gives two outputs the same name: {list(labels)}")
    return labels


def _maps_labels_to_ids(mapping: dict) -> bool:
    """Whether ``mapping`` is {label: id}: its values are ids (JSON numbers, or strings of digits
    where its keys are not: {"negative": "0"}), not names."""
    ids = [_label_id(value) for value in mapping.values()]
    if any(label_id is None for label_id in ids):
        return False
    numbers = all(isinstance(value, int) and not isinstance(value, bool) for value in mapping.values())
    return numbers or not all(_label_id(key) is not None for key in mapping)


def _label_id(key: object) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.strip().isascii() and key.strip().isdecimal():
        return int(key)
    return None


def _labels_from_mapping(mapping: object, num_labels: int, source: Path,
                         field: str = "the label mapping") -> tuple[str, ...]:
    # ModelScope writes {"label": id} (its ids may be strings of digits); some exports write {"id": "label"}.
    if isinstance(mapping, dict) and mapping and _maps_labels_to_ids(mapping):
        ids = [_label_id(v) for v in mapping.values()]
        if len(set(ids)) != len(mapping):
            raise ModelFormatError(f"{source}: two labels share one id in {field}: {mapping}")
        mapping = {label_id: k for k, label_id in zip(mapping, ids)}
    return _labels_by_id(mapping, num_labels, source, field)
