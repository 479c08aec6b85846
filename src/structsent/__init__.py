"""structsent: fast, dependable Chinese sentiment labels with StructBERT/BERT checkpoints.

>>> import structsent
>>> clf = structsent.load("default")                                   # doctest: +SKIP
>>> clf(["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"])           # doctest: +SKIP
[LabelResult(label='正面', score=0.97, ...), LabelResult(label='负面', score=0.98, ...)]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import Backend, EngineConfig, LongTextPolicy, Precision, check_option_names
from .errors import (
    BadInputError,
    ConfigError,
    DeviceOutOfMemoryError,
    MissingExtraError,
    ModelFormatError,
    ModelNotFoundError,
    NotPicklableError,
    OverloadedError,
    StructsentError,
)
from .results import LabelResult

if TYPE_CHECKING:
    from .engine import Classifier

__version__ = "0.1.0"


def load(name_or_path: str | Path = "default", *, config: EngineConfig | None = None, **options) -> "Classifier":
    """Load a model and return a Classifier: ``clf(list_of_texts) -> list[LabelResult]``.

    ``name_or_path``: ``"default"`` (the bundled model), a Hugging Face or ModelScope checkpoint
    directory, or a hub id (downloaded only when a hub client is installed and online).
    ``options`` are EngineConfig fields, e.g. ``device="cuda"``, ``precision="int8"``,
    ``token_budget=4096``, ``long_text="windows"``; given beside ``config``, they replace its
    fields of the same names (``config.replace(**options)``). STRUCTSENT_* variables are the
    command line's: the library does not read them.

    Raises ModelNotFoundError, ModelFormatError (a broken directory, a config that does not fit
    the weights, weights that give NaN or inf on a warm-up batch), ConfigError or MissingExtraError.
    """
    from .backends import create_runner
    from .engine import Classifier, check_model_outputs
    from .models import load_checkpoint
    from .runtime import resolve_runtime

    if config is None:
        check_option_names(options)  # (replace() below checks its own)
        config = EngineConfig(**options)
    elif not isinstance(config, EngineConfig):
        raise ConfigError(f"config={type(config).__name__}: expected an EngineConfig; pass EngineConfig(**fields), "
                          "or the fields themselves as keyword arguments")
    elif options:
        config = config.replace(**options)
    checkpoint = load_checkpoint(name_or_path)
    plan = resolve_runtime(checkpoint, config)
    classifier = Classifier(checkpoint, create_runner(checkpoint, plan), plan)
    check_model_outputs(classifier)
    return classifier


__all__ = [
    "Backend",
    "BadInputError",
    "ConfigError",
    "DeviceOutOfMemoryError",
    "EngineConfig",
    "LabelResult",
    "LongTextPolicy",
    "MissingExtraError",
    "ModelFormatError",
    "ModelNotFoundError",
    "NotPicklableError",
    "OverloadedError",
    "Precision",
    "StructsentError",
    "load",
]
