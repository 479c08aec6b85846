"""Engine flags generated from EngineConfig's fields: one name per setting everywhere.

Each field ``name`` is the flag ``--name-with-dashes`` and the environment variable
``STRUCTSENT_NAME`` (read once, when the parser is built, as the flag's default). The help
shows the field's own one-line description and its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping

from ..config import EngineConfig
from ..errors import ConfigError, UnusedSettingError
from .numbers import integer

ENV_PREFIX = "STRUCTSENT_"
# Earlier flag names, still accepted so that scripts keep working.
ALIASES = {"token_budget": ["--batch-tokens", "--max-batch-tokens"], "num_threads": ["--threads"]}
MODEL_ENV = ENV_PREFIX + "MODEL"
# Each engine setting's STRUCTSENT_* variable, by the setting's name.
SETTING_VARIABLES = {field.name: ENV_PREFIX + field.name.upper() for field in dataclasses.fields(EngineConfig)}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and one flag per EngineConfig field."""
    group = parser.add_argument_group("model and engine (each flag NAME can also be set as STRUCTSENT_NAME)")
    group.add_argument("--model", default=os.environ.get(MODEL_ENV, "default"),
                       help="'default' (bundled), a checkpoint directory, or a hub id (default: %(default)s)")
    hints = typing.get_type_hints(EngineConfig)
    for field in dataclasses.fields(EngineConfig):
        kind = _value_type(hints[field.name])
        default = _environment_default(field, kind)
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {_shown(field.default)})"
        help_text += _set_now(SETTING_VARIABLES[field.name])
        options: dict = {"dest": field.name, "default": default, "help": help_text}
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            options["choices"] = [member.value for member in kind]
        else:
            options["type"] = integer if kind is int else kind
        group.add_argument(flag, *ALIASES.get(field.name, []), **options)


# The variables read outside the engine's flags: the export cache, the hub's deadline, the service's key,
# and the settings the `serve` command hands its worker processes.
OTHER_VARIABLES = ("STRUCTSENT_CACHE", "STRUCTSENT_HUB_TIMEOUT", "STRUCTSENT_API_KEY", "STRUCTSENT_SERVER_SETTINGS")


def known_variables() -> list[str]:
    """Every STRUCTSENT_* variable structsent reads."""
    return [MODEL_ENV, *SETTING_VARIABLES.values(), *OTHER_VARIABLES]


def unknown_variable_warnings(environ: typing.Mapping[str, str]) -> list[str]:
    """One line per STRUCTSENT_* variable that structsent does not read (a misspelt one was ignored
    without a word: STRUCTSENT_THREADS=4 ran on the default threads), naming the closest known one."""
    import difflib

    known = known_variables()
    by_alias = {_variable_of(flag): ENV_PREFIX + name.upper() for name, flags in ALIASES.items() for flag in flags}
    lines = []
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known):
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known],
                                          n=1, cutoff=0.7)
        meant = by_alias.get(name) or (ENV_PREFIX + close[0] if close else None)
        hint = f" (did you mean {meant}?)" if meant else ""
        lines.append(f"structsent: warning: {name} is set, but structsent reads no such variable{hint}")
    return lines


def unread_setting_variables(reads: typing.Iterable[str], environ: typing.Mapping[str, str]) -> list[str]:
    """The STRUCTSENT_* variables of engine settings set in ``environ`` that a command reading only the
    settings ``reads`` ignores (bench took STRUCTSENT_MAX_LENGTH=64 without a word, and ran at 512)."""
    return [variable for name, variable in SETTING_VARIABLES.items() if name not in reads and variable in environ]


def _variable_of(flag: str) -> str:
    return ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()


def engine_default(name: str):
    """The default of a command's own flag for the EngineConfig field ``name``: its STRUCTSENT_*
    variable where set (a BadVariable where it does not parse), else the field's default."""
    field = next(f for f in dataclasses.fields(EngineConfig) if f.name == name)
    return _environment_default(field, _value_type(typing.get_type_hints(EngineConfig)[name]))


def check_no_bad_variable(*values) -> None:
    """A ConfigError for the first STRUCTSENT_* variable among ``values`` that did not parse."""
    bad = next((value for value in values if isinstance(value, BadVariable)), None)
    if bad is not None:
        raise ConfigError(bad.message)


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The EngineConfig the flags describe (validated: a bad value is a ConfigError)."""
    return config_of({field.name: getattr(args, field.name) for field in dataclasses.fields(EngineConfig)},
                     given=getattr(args, "_typed", {}))


def config_of(values: dict, *, given: Mapping[str, str] | None = None) -> EngineConfig:
    """The EngineConfig of these flag values (all of its fields, or some), a value refused naming the
    STRUCTSENT_* variable it came from when it came from one (``given``: the flags typed, by
    destination: a flag given overrides its variable, and is what a refusal names)."""
    check_no_bad_variable(*values.values())  # a variable no flag overrode, for a command that runs the engine
    try:
        return EngineConfig(**values)
    except UnusedSettingError:
        raise ConfigError(_unused_window_stride(values["window_stride"], given or {})) from None
    except ConfigError as err:
        raise ConfigError(named_as_its_variable(str(err), values, given=given)) from None


def _unused_window_stride(stride: int, given: Mapping[str, str]) -> str:
    """A window stride with --long-text truncate (accepted and ignored once: no text is cut into
    windows then), refused after the range checks naming the flag or the variable that gave it."""
    variable = SETTING_VARIABLES["window_stride"]
    raw = os.environ.get(variable)
    named = given.get("window_stride") or (variable if raw is not None and _reads_as(raw, stride) else "--window-stride")
    return f"{named} applies only with --long-text windows"


def named_as_its_variable(message: str, values: dict, *, given: Mapping[str, str] | None = None) -> str:
    """EngineConfig's message ("token_budget=-1: must be in ...") about a value that came from a
    STRUCTSENT_* variable, naming the variable the user set rather than a field they never typed
    (not where its flag was ``given``: the flag overrode it)."""
    for name, value in values.items():
        if given and name in given:
            continue
        variable = ENV_PREFIX + name.upper()
        raw = os.environ.get(variable)
        opening = f"{name}={value!r}: "
        if raw is not None and message.startswith(opening) and _reads_as(raw, value):
            return f"{variable}={raw!r}: {message.removeprefix(opening)}"
    return message


def _reads_as(raw: str, value) -> bool:
    """Whether a variable's text is ``value`` as the flags read it ("+8" and " 8 " are 8)."""
    if str(value) == raw.strip():
        return True
    try:
        return isinstance(value, int) and integer(raw) == value
    except argparse.ArgumentTypeError:
        return False


@dataclasses.dataclass(frozen=True)
class BadVariable:
    """A STRUCTSENT_* variable that does not parse, kept as the flag's default: an error only for
    a command that runs the engine without the flag (`structsent report`, --help, --version run)."""

    message: str


def _value_type(annotation) -> type:
    """int for ``int | None``, the enum for enum fields, str for ``str``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _environment_default(field: dataclasses.Field, kind: type):
    variable = SETTING_VARIABLES[field.name]
    raw = os.environ.get(variable)
    if raw is None:
        return field.default.value if isinstance(field.default, enum.Enum) else field.default
    if kind is int:
        try:
            return integer(raw)
        except argparse.ArgumentTypeError:
            return BadVariable(f"{variable}={raw!r}: expected an integer in ASCII digits")
    value: dict[str, typing.Any] = {field.name: raw}
    try:
        EngineConfig(**value)  # a choice or a device: its own check, named as the variable
    except ConfigError as err:  # what EngineConfig says, without its own "field='value': " opening
        reason = str(err).removeprefix(f"{field.name}={raw!r}: ")
        return BadVariable(f"{variable}={raw!r}: {reason}")
    return raw


def default_from_variable(name: str, default: str) -> str:
    """A command's own flag's help for the EngineConfig field ``name``: "(default: $STRUCTSENT_X, else
    DEFAULT; STRUCTSENT_X='...' sets it now)" (bench's --help said neither where its value came from)."""
    variable = SETTING_VARIABLES[name]
    return f" (default: ${variable}, else {default}{_set_now(variable)})"


def _set_now(variable: str) -> str:
    """"; STRUCTSENT_DEVICE='cpu' sets it now" where the variable is set: --help showed the field's
    default alone, not the value the command would run with (escaped for argparse's % formatting)."""
    if variable not in os.environ:
        return ""
    return f"; {variable}={os.environ[variable]!r} sets it now".replace("%", "%%")


def _shown(default) -> str:
    if isinstance(default, enum.Enum):
        return default.value
    return "none" if default is None else str(default)
