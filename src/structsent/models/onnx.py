"""ONNX directories written by ``structsent export``: model.onnx + config.json + tokenizer files.

The shape, labels and tokenizer come from the directory itself; there are no PyTorch weights
(``state_dict`` is empty), so only the ONNX backend runs such a checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import ModelFormatError
from ..tokenize import Tokenizer
from .checkpoint import Checkpoint, choose_labels, read_json

MODEL_FILE = "model.onnx"
ONNX_CONFIG_KEY = "structsent_onnx"


@dataclasses.dataclass(frozen=True)
class OnnxCheckpoint(Checkpoint):
    """A Checkpoint whose weights live in an ONNX graph."""

    model_file: Path = Path(MODEL_FILE)
    precision: str = "fp32"  # "fp32" or "int8": how the graph was exported
    optimized: bool = False


def is_onnx_directory(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file()


def load_onnx_directory(directory: Path) -> OnnxCheckpoint:
    """Read an exported directory's config, labels and tokenizer (the graph is opened by the backend)."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    shape = _shape_from(config, directory)
    tokenizer = Tokenizer.from_dir(directory)
    if tokenizer.vocab_size > shape.vocab_size:
        raise ModelFormatError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{shape.vocab_size}; the tokenizer files belong to another model"
        )
    export = config.get(ONNX_CONFIG_KEY) or {}
    return OnnxCheckpoint(
        directory=directory,
        format="onnx",
        shape=shape,
        labels=choose_labels(config, shape.num_labels, directory, structbert=False),
        state_dict={},
        tokenizer=tokenizer,
        model_file=directory / str(export.get("model_file", MODEL_FILE)),
        precision=str(export.get("precision", "fp32")),
        optimized=bool(export.get("optimized", False)),
    )


def _shape_from(config: dict, directory: Path):
    from ..modeling import BertShape

    try:
        return BertShape(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            hidden_act=str(config.get("hidden_act", "gelu")),
            num_labels=int(config.get("num_labels", len(config.get("id2label") or {}) or 2)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFormatError(
            f"{directory / 'config.json'}: cannot read the model shape ({type(err).__name__}: {err}); "
            "re-export the model with `structsent export`"
        ) from err
