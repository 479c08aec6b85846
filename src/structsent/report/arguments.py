"""The checks of the report's arguments, one set for Python and the command line: paths, choices,
counts and the job's figures, each a one-line typed error naming the flag and the Python name."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import BadInputError, ConfigError
from ..io.formats import Format
from .aggregate import Period

FORMATS = ("auto", *(f.value for f in Format if f is not Format.TXT))  # plain text has no label columns
PERIODS = tuple(p.value for p in Period)
MAX_COUNT = 100_000
COUNT_FLOORS = {"least_certain": 0, "flagged_sample": 0, "max_groups": 1}  # the fewest each may be
JOB_FIGURES_DEPTH = 8  # the label job writes 2


def as_path(name: str, value: object, *, names: str | None = None) -> str:
    """``value`` as a path string: a str or any os.PathLike naming text (a pathlib.Path). ``names``:
    what the path names, where an empty one is refused (it was read as the working directory)."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise BadInputError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    if names is not None and not path:
        raise BadInputError(f"the path of {names} is empty: name it")
    return path


def check_overwrite(value: object) -> None:
    """overwrite: True or False (a truthy "no" replaced a report)."""
    if not isinstance(value, bool):
        raise ConfigError(f"--overwrite (overwrite= in Python) must be True or False, not {value!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{_named(name)} must be one of {', '.join(choices)}, not {value!r}")


def check_counts(**counts: object) -> None:
    """least_certain, flagged_sample, max_groups: whole numbers (not bools) in their ranges."""
    for name, value in counts.items():
        floor = COUNT_FLOORS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not floor <= value <= MAX_COUNT:
            raise ConfigError(f"{_named(name)} must be a whole number between {floor} and {MAX_COUNT}, not {value!r}")


def check_names(**names: object) -> None:
    """prefix, text_column, by, negative: a text each, or None."""
    for name, value in names.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{_named(name)} must be a str or None, not {type(value).__name__}")


def check_job_figures(figures: object) -> None:
    """A mapping nested at most JOB_FIGURES_DEPTH deep, as a summary file must be."""
    if not isinstance(figures, Mapping):
        raise ConfigError(f"job_figures must be a mapping (the job's figures by name), not {type(figures).__name__}")
    if nested_deeper_than(figures, JOB_FIGURES_DEPTH):
        raise ConfigError(f"job_figures: nested more than {JOB_FIGURES_DEPTH} objects deep")


def nested_deeper_than(value: object, depth: int) -> bool:
    """Whether mappings nest in ``value`` more than ``depth`` deep (it never looks further down)."""
    if not isinstance(value, Mapping):
        return False
    return depth == 0 or any(nested_deeper_than(item, depth - 1) for item in value.values())


def _named(name: str) -> str:
    flag = {"fmt": "format"}.get(name, name).replace("_", "-")
    return f"--{flag} ({name}= in Python)"
