"""Benchmark models: a randomly initialised checkpoint of a real model's exact shape.

``--shape structbert-base`` measures the speed of StructBERT-base without its weights: the
shape fixes the cost, the values do not (labels of random weights mean nothing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..models import BUNDLED_MODEL_DIR

VOCAB_FILE = BUNDLED_MODEL_DIR / "vocab.txt"  # bert-base-chinese's, as StructBERT Chinese checkpoints use

SHAPES = {
    "structbert-base": dict(
        vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
    ),
}


def shape_model_dir(shape_name: str, *, seed: int = 0) -> Path:
    """A Hugging Face directory holding a random model of ``shape_name``, built once into the cache."""
    from ..onnx.cache import cache_root

    if shape_name not in SHAPES:
        raise ConfigError(f"--shape {shape_name!r}: expected one of {', '.join(SHAPES)}")
    target = cache_root() / "bench" / f"{shape_name}-random-seed{seed}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    build_random_model(SHAPES[shape_name], staging, seed=seed)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def build_random_model(shape: dict, directory: Path, *, seed: int) -> None:
    """Save a randomly initialised BertForSequenceClassification with the Chinese BERT vocabulary."""
    import torch

    from ..errors import require

    transformers = require("transformers", "bench")
    torch.manual_seed(seed)
    labels = {0: "负面", 1: "正面"}
    config = transformers.BertConfig(**shape, id2label=labels, label2id={v: k for k, v in labels.items()})
    transformers.BertForSequenceClassification(config).eval().save_pretrained(directory)
    shutil.copy(VOCAB_FILE, directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"})
    )
