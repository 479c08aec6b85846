"""What every on-disk format is loaded into: shape, labels, weights and tokenizer."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ..errors import ModelFormatError
from ..tokenize import Tokenizer

STRUCTBERT_SENTIMENT_LABELS = ("负面", "正面")  # 0 = negative, 1 = positive
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
_IGNORED = re.compile(r"(position_ids|cls\.predictions\.|cls\.seq_relationship\.|num_batches_tracked)")
_HEAD_PREFIXES = ("classifier.", "head.classifier.", "head.", "cls_head.")
_ENCODER_PREFIXES = ("bert.", "encoder.", "structbert.", "model.bert.", "model.encoder.", "model.", "")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A model ready for a backend: everything read from disk and checked."""

    directory: Path
    format: str  # "huggingface" or "modelscope"
    shape: object  # modeling.BertShape (kept untyped so that this module imports without torch)
    labels: tuple[str, ...]
    state_dict: dict  # Hugging Face BertForSequenceClassification names, float32 tensors
    tokenizer: Tokenizer

    @property
    def name(self) -> str:
        return self.directory.name


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelFormatError(f"{path}: missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return value


def find_weights(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors preferred."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            return [directory / s for s in shards]
        if (directory / single).is_file():
            return [directory / single]
    raise ModelFormatError(
        f"{directory}: no model.safetensors or pytorch_model.bin; copy the checkpoint's weights here"
    )


def read_weights(files: list[Path]) -> dict:
    """Read tensors from safetensors or PyTorch files, as float32 on the CPU."""
    import torch

    tensors: dict = {}
    for path in files:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(path))
            else:
                part = torch.load(str(path), map_location="cpu", weights_only=True)
                part = part.get("state_dict", part) if isinstance(part, dict) else part
        except FileNotFoundError as err:
            raise ModelFormatError(f"{path}: missing weight file") from err
        except Exception as err:  # corrupt archives raise many unrelated types
            raise ModelFormatError(
                f"{path}: cannot read weights ({type(err).__name__}: {err}); the file is corrupt "
                "or truncated, download it again"
            ) from err
        if not isinstance(part, dict):
            raise ModelFormatError(f"{path}: expected a state dict, got {type(part).__name__}")
        for key, value in part.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value.float() if value.is_floating_point() else value
    return tensors


def normalise_state_dict(raw: dict, source: Path) -> dict:
    """Rename the variants seen in BERT-family checkpoints to Hugging Face BERT names.

    Handles a ``bert.``/``encoder.``/``structbert.`` prefix (or none), ``gamma``/``beta``
    LayerNorm names, a ``classifier.*`` or ``head.classifier.*`` head, a ``module.`` prefix from
    data-parallel training, and drops ``position_ids`` buffers and pre-training heads.
    """
    tensors = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if _IGNORED.search(key):
            continue
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        tensors[key] = value
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
    out = {}
    for key, value in tensors.items():
        if key.startswith(head):
            out["classifier." + key[len(head):]] = value
        elif key.startswith(prefix):
            out["bert." + key[len(prefix):]] = value
    return out


def choose_labels(config: dict, num_labels: int, directory: Path, *, structbert: bool) -> tuple[str, ...]:
    """Labels from id2label, else label_mapping.json, else StructBERT's sentiment pair."""
    id2label = config.get("id2label") or {}
    labels = _labels_from_id_map(id2label, num_labels)
    if labels and not all(_GENERIC_LABEL.match(lab) for lab in labels):
        return labels
    mapping_file = directory / "label_mapping.json"
    if mapping_file.is_file():
        mapped = _labels_from_mapping(read_json(mapping_file), num_labels, mapping_file)
        if mapped:
            return mapped
    if num_labels == 2 and (structbert or not labels):
        return STRUCTBERT_SENTIMENT_LABELS
    return labels or tuple(f"LABEL_{i}" for i in range(num_labels))


def _labels_from_id_map(id2label: dict, num_labels: int) -> tuple[str, ...] | None:
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_id) != list(range(num_labels)):
        return None
    return tuple(by_id[i] for i in range(num_labels))


def _labels_from_mapping(mapping: dict, num_labels: int, source: Path) -> tuple[str, ...] | None:
    # ModelScope writes {"label": id}; some exports write {"id": "label"}.
    if all(isinstance(v, int) for v in mapping.values()):
        return _labels_from_id_map({v: k for k, v in mapping.items()}, num_labels)
    labels = _labels_from_id_map(mapping, num_labels)
    if labels is None:
        raise ModelFormatError(f"{source}: does not map ids 0..{num_labels - 1} to labels")
    return labels
