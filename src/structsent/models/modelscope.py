"""ModelScope StructBERT directories, as ``damo/nlp_structbert_sentiment-classification_chinese-base``
is distributed: configuration.json, config.json (model_type structbert), pytorch_model.bin,
vocab.txt, optional label_mapping.json. At inference StructBERT is BERT, so the weights are
renamed to BERT's and loaded into the same module as every other checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFormatError
from ..model_files import model_file_present
from .checkpoint import Checkpoint
from .hf import load_directory


def is_modelscope_directory(directory: Path) -> bool:
    return model_file_present(directory / "configuration.json")


def load_modelscope_directory(directory: Path) -> Checkpoint:
    if not model_file_present(directory / "config.json"):  # the model's own settings: configuration.json is the pipeline's
        raise ModelFormatError(f"{directory / 'config.json'}: missing; a ModelScope model directory holds "
                               "configuration.json (the pipeline's settings) and config.json (the model's) "
                               "beside its weights and vocab.txt: copy the whole directory")
    return load_directory(directory, format_name="modelscope")
