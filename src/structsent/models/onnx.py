"""ONNX directories written by ``structsent export``: model.onnx + config.json + tokenizer files.

The shape, labels and tokenizer come from the directory itself; there are no PyTorch weights
(``state_dict`` is empty), so only the ONNX backend runs such a checkpoint.
"""

from __future__ import annotations

import dataclasses
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
    read_json,
)

MODEL_FILE = "model.onnx"
ONNX_CONFIG_KEY = "structsent_onnx"


@dataclasses.dataclass(frozen=True)
class OnnxCheckpoint(Checkpoint):
    """A Checkpoint whose weights live in an ONNX graph."""

    model_file: Path = Path(MODEL_FILE)
    precision: str = "fp32"  # "fp32" or "int8": how the graph was exported
    optimized: bool = False

    @property
    def is_exported(self) -> bool:
        return True


def is_onnx_directory(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file()


def load_onnx_directory(directory: Path) -> OnnxCheckpoint:
    """Read an exported directory's config, labels and tokenizer (the graph is opened by the backend)."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    shape = _shape_from(config, directory)
    tokenizer = Tokenizer.from_dir(directory)
    check_vocabulary_fits(tokenizer.vocab_size, shape.vocab_size, directory)
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
