"""Model formats: one module each, all loaded into the same Checkpoint.

``resolve_model`` turns what a user typed (``"default"``, a directory, a hub id) into a
loaded Checkpoint. The bundled model is an ordinary Hugging Face directory inside the package.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ConfigError, ModelFormatError, ModelNotFoundError
from ..model_files import model_file_present
from .checkpoint import TOKENIZER_FILES, Checkpoint, weight_files_read

BUNDLED_MODEL_DIR = Path(__file__).parent / "default"
DEFAULT_MODEL = "default"


def resolve_directory(name_or_path: str | Path) -> Path:
    """The local directory that holds the model ``name_or_path`` names."""
    from . import hub

    if isinstance(name_or_path, os.PathLike) and not isinstance(name_or_path, Path):  # PurePath, __fspath__
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, (str, Path)):  # None from an unset variable, bytes, a number
        raise ModelNotFoundError(
            f"the model must be named by a string or a path, got {type(name_or_path).__name__} "
            f"({name_or_path!r:.60}); pass 'default', a checkpoint directory or a hub id"
        )
    if isinstance(name_or_path, str) and not name_or_path.strip():
        # Path("") is the current directory: an unset variable must not load whatever lies there. A
        # usage error, as a blank setting is (it was a ModelNotFoundError: exit 3, "model not found").
        raise ConfigError(
            "the model name is empty; pass 'default', a checkpoint directory (use '.' for the current "
            "one) or a hub id (--model / STRUCTSENT_MODEL)"
        )
    if isinstance(name_or_path, str) and name_or_path == DEFAULT_MODEL:  # Path("default") is a directory
        if not (BUNDLED_MODEL_DIR / "config.json").is_file():
            raise ModelNotFoundError(
                f"the bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall structsent"
            )
        return BUNDLED_MODEL_DIR
    if "\x00" in str(name_or_path):  # no file name holds one (a stat raised a bare ValueError)
        raise ModelNotFoundError(f"{str(name_or_path)[:200]!r}: a model path cannot hold a NUL character")
    path = expanded(Path(name_or_path), "model")
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as err:  # a name longer than the filesystem allows, a loop of links, no permission
        raise ModelNotFoundError(f"{str(name_or_path)[:200]}: cannot be looked at as a model directory "
                                 f"({err.strerror or err})") from err
    if mode is not None and stat.S_ISDIR(mode):
        return path
    if mode is not None:
        raise ModelFormatError(f"{path}: expected a model directory, got a file")
    if isinstance(name_or_path, str) and hub.looks_like_hub_id(name_or_path):
        return hub.download(name_or_path)
    if str(name_or_path) == DEFAULT_MODEL:  # Path("default"): the string names the bundled model
        raise ModelNotFoundError(f"{_named(name_or_path)}: no such model directory; the bundled model is named by the "
                                 f"string {DEFAULT_MODEL!r}, not by a path")
    raise ModelNotFoundError(
        f"{_named(name_or_path)}: no such model directory (pass 'default', a local checkpoint directory, "
        "or a hub id such as damo/nlp_structbert_sentiment-classification_chinese-base)"
    )


def _named(name_or_path: str | Path) -> str:
    """A model's name as typed, quoted where white space begins or ends it (" default" was shown as
    "structsent: error:  default: no such model directory", its space unseen)."""
    text = str(name_or_path)
    return repr(text) if text != text.strip() else text


def load_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """Load the checkpoint in whichever supported format the directory holds."""
    from .hf import load_directory
    from .modelscope import is_modelscope_directory, load_modelscope_directory
    from .onnx import is_onnx_directory, load_onnx_directory

    directory = resolve_directory(name_or_path)
    if is_onnx_directory(directory):
        return load_onnx_directory(directory)
    if is_modelscope_directory(directory):
        return load_modelscope_directory(directory)
    if model_file_present(directory / "config.json"):
        return load_directory(directory)
    raise ModelFormatError(
        f"{directory}: no config.json (Hugging Face) or configuration.json (ModelScope); "
        "this directory does not hold a supported checkpoint"
    )


# Read by a load beside the weights (those of the format it finds; the others are not opened).
FILES_BESIDE_WEIGHTS = ("config.json", "configuration.json", "label_mapping.json", *TOKENIZER_FILES)


def files_a_load_reads(directory: Path) -> list[Path]:
    """The regular files a load of ``directory`` reads, sorted by their path in it: what identifies
    the model (the label job's fingerprint, the ONNX cache's key). Whatever else lies there (a
    50 GB training log, the same weights in another format, a README) changes no result, and was
    read in full at every job and every ONNX load. An export's directory holds only the export's
    files: all of them."""
    from .onnx import is_onnx_directory

    directory = Path(directory)
    if is_onnx_directory(directory):
        files = {p for p in directory.iterdir() if p.is_file()}
    else:
        files = {directory / name for name in FILES_BESIDE_WEIGHTS} | set(weight_files_read(directory))
    return sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(directory).as_posix())


__all__ = ["BUNDLED_MODEL_DIR", "Checkpoint", "files_a_load_reads", "load_checkpoint", "resolve_directory"]


def expanded(path: Path, what: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a ConfigError when it cannot be (no such
    user, no home directory known: pathlib raises a bare RuntimeError)."""
    try:
        return path.expanduser()
    except RuntimeError as err:
        raise ConfigError(f"{what} path {path}: cannot expand '~' ({err}); give the directory in full") from None
