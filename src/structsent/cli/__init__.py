"""The `structsent` command line: one module per subcommand, registered here explicitly.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports
its heavy dependencies only inside ``run``; a missing optional dependency is a
MissingExtraError there (exit 4, naming the extra to install), never a vanished subcommand.
Typed errors become exit codes here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import re
import sys
import typing
from collections.abc import Iterator, Mapping

from .. import __version__
from .._exit import (
    EXIT_BAD_INPUT,
    EXIT_BAD_MODEL,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_TERMINATED,
    STANDARD_OUTPUT,
    Terminated,
)
from ..errors import (
    BadInputError,
    ConfigError,
    JobLockedError,
    MissingExtraError,
    ModelFormatError,
    ModelNotFoundError,
    StructsentError,
)
from ..lines import one_line
from . import bench, export, label, report, serve
from .engine_flags import SETTING_VARIABLES, named_as_its_variable, unknown_variable_warnings
from .signals import sigterm_as_interrupt

# name -> (module, help)
SUBCOMMANDS = {
    "label": (label, "label a file of texts (CSV, TSV, JSONL, Parquet, plain text)"),
    "serve": (serve, "run the HTTP service with dynamic micro-batching"),
    "export": (export, "export a model to ONNX (fused; optionally int8) with an accuracy report"),
    "bench": (bench, "benchmark structsent against the usual baselines"),
    "report": (report, "write an offline HTML report of a file `structsent label` wrote"),
}

EXIT_CODES = {
    BadInputError: EXIT_BAD_INPUT,
    ConfigError: EXIT_BAD_INPUT,
    JobLockedError: EXIT_BAD_INPUT,
    ModelNotFoundError: EXIT_BAD_MODEL,
    ModelFormatError: EXIT_BAD_MODEL,
    MissingExtraError: EXIT_MISSING_EXTRA,
}


class OneLineErrors(argparse.ArgumentParser):
    """A parser whose usage errors are one line, as every other error (argparse printed its usage
    block first, and quoted a value holding a line break or an escape sequence as it stands)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class TopLevelParser(OneLineErrors):
    """``structsent``'s own parser: an option it does not know, given before the command, is named
    (``structsent --nope`` said only that a command is required), and a misspelt command gets the
    nearest one (``structsent lable``: did you mean 'label'?)."""

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        command_at = next((i for i, token in enumerate(argv) if not token.startswith("-") or token in ("-", "--")),
                          len(argv))
        unknown = [token for token in argv[:command_at] if not self._knows(token.split("=", 1)[0])]
        if unknown:
            commands = ", ".join(SUBCOMMANDS)
            self.error(f"unrecognized arguments: {' '.join(unknown)} (structsent's own options are --help and "
                       f"--version; a command's options come after the command: {commands})")
        if command_at < len(argv) and argv[command_at] not in SUBCOMMANDS:
            nearest = difflib.get_close_matches(argv[command_at], SUBCOMMANDS, n=1)
            if nearest:
                self.error(f"unknown command {argv[command_at]!r}: did you mean {nearest[0]!r}?")
        return super().parse_known_args(args, namespace)

    def _knows(self, option: str) -> bool:
        """One of its options, or an abbreviation argparse takes for one (--vers)."""
        return option in self._option_string_actions or (
            option.startswith("--") and len(option) > 2 and any(o.startswith(option) for o in self._option_string_actions))


class SubcommandParser(OneLineErrors):
    """A subcommand's parser: an argument it does not know is its own error, pointing at its own
    --help (argparse handed it up to the top parser, whose message said `see structsent --help`)."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        parsed._typed = typed_flags(self, list(args or ()))
        return parsed, extras


def typed_flags(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """Each option given on the command line, by destination, as typed (an alias, an abbreviation
    argparse took for it): a refusal names what the user typed, and a flag given beside its
    STRUCTSENT_* variable is named, not the variable it overrode."""
    typed: dict[str, str] = {}
    for token in argv:
        if token == "--":
            break
        word = token.split("=", 1)[0]
        if not word.startswith("-") or word == "-":
            continue
        for action in parser._actions:
            if any(o == word or (word.startswith("--") and len(word) > 2 and o.startswith(word))
                   for o in action.option_strings):
                typed[action.dest] = word  # the last one given: its value is the one argparse keeps
                break
    return typed


def build_parser() -> argparse.ArgumentParser:
    parser = TopLevelParser(prog="structsent", description="Fast Chinese sentiment labelling with StructBERT.")
    parser.add_argument("--version", action="version", version=f"structsent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=SubcommandParser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run, _flag_of=_long_flags(sub_parser))
    return parser


def _long_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's destination and the flag a user types for it (its first long spelling)."""
    return {action.dest: next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
            for action in parser._actions if action.option_strings and action.dest != "help"}


def in_the_users_words(err: StructsentError, args: argparse.Namespace | None) -> str:
    """A ConfigError about a setting's value speaks the library's words ("token_budget=100: must be
    ..."): on the command line it names what the user set, the STRUCTSENT_* variable the value came
    from, else the command's flag ("--token-budget 100: must be ...")."""
    message = str(err)
    flags = getattr(args, "_flag_of", None)
    if not isinstance(err, ConfigError) or not flags:
        return message
    typed: dict[str, str] = getattr(args, "_typed", {})
    values = {dest: getattr(args, dest) for dest in flags if hasattr(args, dest)}
    named = named_as_its_variable(message, values, given=typed)
    if named == message:
        for dest, value in values.items():
            opening = f"{dest}={value!r}: "
            if message.startswith(opening):
                named = f"{typed.get(dest, flags[dest])} {_shown_value(value)}: {message.removeprefix(opening)}"
                break
    return _settings_as_flags(named, flags) + _variables_behind(named, values, typed)


def _shown_value(value: object) -> object:
    """A flag's value as the user can see it: quoted where it is empty or holds blanks ("--device  cpu:"
    hid the space that made it wrong; "--device :" the empty value)."""
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return repr(value)
    return value


def _settings_as_flags(message: str, flags: dict[str, str]) -> str:
    """The library's spelling of a setting in advice ("use device='cpu'", "attention=packed runs
    with ...") as the command's flag ("use --device cpu")."""
    def as_flag(match: re.Match) -> str:
        return f"{flags[match[1]]} {match[3]}"

    names = "|".join(re.escape(dest) for dest in sorted(flags, key=len, reverse=True) if dest.isidentifier())
    if not names:
        return message
    # A word of its own (after a space, a bracket, a quote or the start): never part of a path
    # ("/runs/precision=fp16" stays as it is).
    return re.sub(rf"(?<![^\s(\[\"'])({names})=(['\"]?)([\w.:-]+)\2(?![\w=/])", as_flag, message)


def _names_setting(message: str, name: str) -> bool:
    """Whether ``message`` names the setting ``name`` as a refusal does: "device 'cuda:1'", "attention=packed",
    "max_length (64)", "(here: device cpu, precision fp32)"; not as a word of a path or of advice
    ("~user/device-backend: cannot expand '~'" named two variables that had nothing to do with it)."""
    spelled = f"({re.escape(name)}|{re.escape(name.replace('_', '-'))})"
    return re.search(rf"(?<![\w/.~-]){spelled}(=| '| \(| [\w:.]+[,)])", message) is not None


def _variables_behind(message: str, values: dict, typed: Mapping[str, str]) -> str:
    """" (STRUCTSENT_DEVICE='cuda:1' is set in the environment)" for each engine setting the message
    names whose value came from its variable, not a flag: the runtime's refusals ("device 'cuda:1':
    CUDA is not available", "attention=packed runs with ...") named neither, and a variable left in a
    shell profile is what a user cannot see."""
    variables = []
    for name, variable in SETTING_VARIABLES.items():
        if name in typed or name not in values or variable not in os.environ or variable in message:
            continue
        if _names_setting(message, name):
            variables.append(f"{variable}={os.environ[variable]!r}")
    if not variables:
        return ""
    return f" ({', '.join(variables)} {'is' if len(variables) == 1 else 'are'} set in the environment)"


def exit_code(error: StructsentError) -> int:
    return next((code for kind, code in EXIT_CODES.items() if isinstance(error, kind)), EXIT_FAILURE)


def _one_line(message: str) -> str:
    """An error's message on one line: a message may quote text that spans lines (a file name
    holding a line break), and an error is one line of standard error (see ``lines.one_line``)."""
    return one_line(message.strip("\n"))


class _SaidAsTheCommandsWarnings(logging.Handler):
    """The library's logged warnings ("max_length=100000 is more than the model's 512 positions",
    "ONNX export unavailable ...; running torch instead") as the command says its own: one line,
    "structsent: warning: ...". (Python's last-resort handler printed them bare, control characters
    and line breaks as they stand, among the command's prefixed lines.)"""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: logging's own report
            self.handleError(record)
            return
        print(f"structsent: {_kind_of(record)}{_one_line(message)}", file=sys.stderr)


def _kind_of(record: logging.LogRecord) -> str:
    """What the line says the record is: a notice (the ONNX export's record) says nothing, an error is
    an error, the rest are warnings."""
    if getattr(record, "notice", False):
        return ""
    return "error: " if record.levelno >= logging.ERROR else "warning: "


@contextlib.contextmanager
def library_warnings_said_as_ours(command: str) -> Iterator[None]:
    """While ``command`` runs, the ``structsent`` logger's warnings go to standard error as the
    command's own warnings. Not for `serve`, whose logging configuration (a log line's level and
    logger) is its own."""
    if command == "serve":
        yield
        return
    logger = logging.getLogger("structsent")
    handler = _SaidAsTheCommandsWarnings(logging.WARNING)
    logger.addHandler(handler)
    # Said once: a caller's own logging configuration (the root's handlers) printed the record again.
    propagated, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagated


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        # SIGTERM while the command starts (imports, the model's load) ends it as Ctrl-C does, said in
        # one line with exit 143, not a silent death; commands with their own handler set it over this.
        with sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            for warning in unknown_variable_warnings(os.environ):
                print(one_line(warning), file=sys.stderr)
            with library_warnings_said_as_ours(args.command):
                return int(args._run(args) or EXIT_OK)
    except Terminated:
        print("structsent: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("structsent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StructsentError as err:
        print(f"structsent: error: {_one_line(in_the_users_words(err, args))}", file=sys.stderr)
        return exit_code(err)
    except BrokenPipeError:
        return EXIT_OK  # `structsent label ... | head`: the reader has what it wanted
    except OSError as err:  # e.g. a summary to a standard output that cannot be written (`>/dev/full`)
        print(f"structsent: error: {_where_it_failed(err)}{err.strerror or err}", file=sys.stderr)
        return EXIT_FAILURE


def _where_it_failed(err: OSError) -> str:
    """What an OS error's message opens with: the file it names, or standard output's failure as such."""
    if err.filename == STANDARD_OUTPUT:
        return f"cannot write {STANDARD_OUTPUT}: "
    return f"{err.filename}: " if err.filename else ""


if __name__ == "__main__":
    sys.exit(main())
