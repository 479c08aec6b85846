"""Hugging Face directories: config.json + model.safetensors|pytorch_model.bin + vocab.txt|tokenizer.json.

Also the loader behind ModelScope StructBERT directories, which differ only in how their
config and weights are named.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..errors import ModelFormatError
from ..tokenize import Tokenizer
from .checkpoint import (
    Checkpoint,
    build_shape,
    check_vocabulary_fits,
    choose_labels,
    config_float,
    config_int,
    config_str,
    describe_keys,
    find_weights,
    normalise_state_dict,
    read_json,
    read_weights,
)

SUPPORTED_MODEL_TYPES = ("bert", "structbert", "roberta-bert")
_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")
_BERT_ARCHITECTURES = ("BertForSequenceClassification", "SbertForSequenceClassification")


def load_directory(directory: Path, *, format_name: str = "huggingface") -> Checkpoint:
    """Load a BERT-family sequence classifier from a directory."""
    config = read_json(directory / "config.json")
    model_type = str(config.get("model_type", "bert")).lower()
    if model_type not in SUPPORTED_MODEL_TYPES and not _declares_bert(config):
        raise ModelFormatError(
            f"{directory / 'config.json'}: model_type {model_type!r} is not supported; structsent runs "
            f"BERT-architecture classifiers (model_type one of {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    weights_files = find_weights(directory)
    tensors = normalise_state_dict(read_weights(weights_files), weights_files[0])
    shape = _shape_from(config, tensors, directory)
    _check_tensors(tensors, shape, weights_files[0])
    tokenizer = Tokenizer.from_dir(directory)
    _check_vocabulary(tokenizer, shape, directory)
    labels = choose_labels(
        config, shape.num_labels, directory, structbert=model_type == "structbert" or format_name == "modelscope"
    )
    return Checkpoint(
        directory=directory,
        format=format_name,
        shape=shape,
        labels=labels,
        state_dict=tensors,
        tokenizer=tokenizer,
    )


def _declares_bert(config: dict) -> bool:
    architectures = config.get("architectures")
    return isinstance(architectures, list) and any(a in _BERT_ARCHITECTURES for a in architectures)


def _shape_from(config: dict, tensors: dict, directory: Path):
    source = directory / "config.json"
    word = tensors["bert.embeddings.word_embeddings.weight"]  # both present: normalise_state_dict checked
    head = tensors["classifier.weight"]
    for name, tensor in (("bert.embeddings.word_embeddings.weight", word), ("classifier.weight", head)):
        if tensor.dim() != 2:
            raise ModelFormatError(f"{directory}: tensor {name} has shape {tuple(tensor.shape)}, not (rows, columns); "
                                   "the weights are damaged or not a BERT classifier's")
    _check_single_label(config, source)
    hidden = config_int(config, "hidden_size", source, default=int(word.shape[1]))
    config_int(config, "vocab_size", source, default=int(word.shape[0]))  # (the weights' rows are the size; still
    # a value of the wrong type says the file is not what it claims, as for every other field)
    shape = build_shape(
        source,
        vocab_size=int(word.shape[0]),
        hidden_size=hidden,
        num_layers=config_int(config, "num_hidden_layers", source),
        num_heads=config_int(config, "num_attention_heads", source),
        intermediate_size=config_int(config, "intermediate_size", source, default=4 * hidden),
        max_position_embeddings=config_int(config, "max_position_embeddings", source, default=512),
        type_vocab_size=config_int(config, "type_vocab_size", source, default=2),
        layer_norm_eps=config_float(config, "layer_norm_eps", source, default=1e-12),
        hidden_act=config_str(config, "hidden_act", source, default="gelu"),
        num_labels=int(head.shape[0]),
    )
    if word.shape[1] != shape.hidden_size:
        raise ModelFormatError(
            f"{directory}: config.json says hidden_size {shape.hidden_size} but the embeddings "
            f"are {word.shape[1]} wide; config.json and the weights come from different models"
        )
    return shape


def _check_single_label(config: dict, source: Path) -> None:
    """One label per text, from a softmax over the outputs: a model trained otherwise (independent
    yes/no outputs, or a score) would be given labels it was not trained to give."""
    problem = config.get("problem_type")
    if problem not in (None, "single_label_classification"):
        raise ModelFormatError(
            f"{source}: problem_type is {problem!r}; structsent gives each text one label from a softmax over "
            "the outputs, which only a single_label_classification model's outputs mean"
        )


def _check_tensors(tensors: dict, shape, source: Path) -> None:
    """Every tensor the shape needs is there, of that shape, and finite (NaN weights give NaN
    outputs, which must never become labels)."""
    from ..modeling import expected_hf_shapes

    _check_layer_count(tensors, shape.num_layers, source)
    shapes = expected_hf_shapes(shape)
    for name, expected in shapes.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise ModelFormatError(
                f"{source}: missing tensor {name}; the file is incomplete or not a BERT classifier "
                f"with the {shape.num_layers} layers config.json declares"
            )
        if tuple(tensor.shape) != expected:
            raise ModelFormatError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, config.json implies "
                f"{expected}; config.json and the weights come from different models"
            )
        if not tensor.is_floating_point():  # a float's bits read as integers, or a mask saved in its place
            raise ModelFormatError(
                f"{source}: tensor {name} holds {str(tensor.dtype).removeprefix('torch.')} values, not floating-point "
                "weights; the weights file is damaged or not a BERT classifier's"
            )
        if not _all_finite(tensor):
            raise ModelFormatError(
                f"{source}: tensor {name} holds non-finite values ({_non_finite_kinds(tensor)}); the "
                "weights file is corrupt or comes from a diverged training run"
            )
    _check_embeddings_normalisable(tensors, shape.hidden_size, source)
    _check_no_unused(tensors, shapes, source, shape.num_layers)


FLOAT32_MAX = 3.4028234663852886e38
EMBEDDING_TABLES = ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                    "bert.embeddings.token_type_embeddings.weight")


def embedding_limit(hidden_size: int) -> float:
    """The largest embedding value whose token the layer normalisation after the embeddings can
    take in float32: three tables' values summed, squared and added over the hidden size stay
    finite below it (3.1e17 for a hidden size of 384)."""
    return math.sqrt(FLOAT32_MAX / hidden_size) / len(EMBEDDING_TABLES)


def _check_embeddings_normalisable(tensors: dict, hidden_size: int, source: Path) -> None:
    """Finite but huge embedding rows (1e35) are not caught by the load's warm-up batch when its
    texts do not use them, and then one runtime's normalisation overflowed (a flagged row) while
    another's gave a label computed from a value rounded past meaning: refused here instead."""
    limit = embedding_limit(hidden_size)
    for name in EMBEDDING_TABLES:
        largest, flat_index = tensors[name].abs().flatten().max(dim=0)
        if float(largest) >= limit:
            row = int(flat_index) // hidden_size
            raise ModelFormatError(
                f"{source}: tensor {name} holds {float(largest):.3g} (row {row}), past {limit:.3g}, where the "
                "normalisation after the embeddings overflows float32; the weights file is corrupt"
            )


def _check_layer_count(tensors: dict, num_layers: int, source: Path) -> None:
    """More layers declared than the weights hold: refused before the shapes of every declared
    layer are listed (num_hidden_layers=10**9 filled memory without end)."""
    held = {n for name in tensors if (n := _layer_of(name)) is not None}
    if num_layers > len(held):
        raise ModelFormatError(
            f"{source}: config.json declares num_hidden_layers={num_layers} but the weights hold "
            f"{len(held)} encoder layer{'' if len(held) == 1 else 's'}; config.json and the weights come from "
            "different models, or the file is incomplete"
        )


def _check_no_unused(tensors: dict, expected: dict, source: Path, num_layers: int) -> None:
    """Every tensor of the weights is used: one the model would ignore means config.json describes
    another model (fewer layers, relative positions...) and the labels would be wrong."""
    unused = [name for name in tensors if name not in expected]
    if not unused:
        return
    extra_layers = sorted({n for name in unused if (n := _layer_of(name)) is not None and n >= num_layers})
    if extra_layers:
        extra = [name for name in unused if _layer_of(name) in extra_layers]
        raise ModelFormatError(
            f"{source}: the weights hold encoder layer{'s' if len(extra_layers) > 1 else ''} "
            f"{', '.join(map(str, extra_layers))} "
            f"({describe_keys(extra)}) but config.json declares num_hidden_layers={num_layers}; "
            "config.json and the weights come from different models"
        )
    raise ModelFormatError(
        f"{source}: {describe_keys(unused)} not used by a BERT classifier of the shape config.json declares; "
        "config.json and the weights come from different models, or the architecture is not plain BERT"
    )


def _layer_of(name: str) -> int | None:
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def _all_finite(tensor) -> bool:
    # A sum is finite only if every value is (it is ~13x faster than an element-wise test on a
    # CPU, 5 ms for the bundled model); a non-finite sum may still be an overflow of finite values.
    return bool(tensor.sum().isfinite()) or bool(tensor.isfinite().all())


def _non_finite_kinds(tensor) -> str:
    seen = (("nan", tensor.isnan()), ("inf", tensor.isposinf()), ("-inf", tensor.isneginf()))
    return ", ".join(name for name, where in seen if bool(where.any()))


def _check_vocabulary(tokenizer: Tokenizer, shape, directory: Path) -> None:
    check_vocabulary_fits(tokenizer.vocab_size, shape.vocab_size, directory)
