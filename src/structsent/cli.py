"""The `structsent` command line: parses flags, builds the EngineConfig, maps errors to exit codes.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int`` and imports its heavy dependencies only inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .config import Backend, EngineConfig, LongTextPolicy, Precision
from .errors import (
    BadInputError,
    ConfigError,
    JobLockedError,
    MissingExtraError,
    ModelFormatError,
    ModelNotFoundError,
    StructsentError,
)

# name -> (module, help)
SUBCOMMANDS = {
    "label": ("structsent.jobs.cli", "label a file of texts (CSV, TSV, JSONL, Parquet, plain text)"),
    "serve": ("structsent.server.cli", "run the HTTP service with dynamic micro-batching"),
    "export": ("structsent.export", "export a model to ONNX (optionally optimised and int8)"),
    "bench": ("structsent.bench.cli", "benchmark structsent against the usual baselines"),
    "report": ("structsent.report.cli", "an offline HTML report of a labelled file (counts, scores, doubts, groups)"),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = {
    BadInputError: 2,
    ConfigError: 2,
    JobLockedError: 2,
    ModelNotFoundError: 3,
    ModelFormatError: 3,
    MissingExtraError: 4,
}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every subcommand that loads a model."""
    group = parser.add_argument_group("model and engine")
    group.add_argument("--model", default="default", help="'default' (bundled), a checkpoint directory, or a hub id")
    group.add_argument("--backend", default="auto", choices=[b.value for b in Backend])
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    group.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    group.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per batch")
    group.add_argument("--max-batch-size", type=int, default=None, help="texts per batch")
    group.add_argument("--max-length", type=int, default=512, help="tokens per text, [CLS]/[SEP] included")
    group.add_argument("--long-text", default="truncate", choices=[p.value for p in LongTextPolicy])
    group.add_argument("--threads", type=int, default=None, help="CPU threads of the runtime")
    group.add_argument("--pad-multiple", type=int, default=None,
                       help="pad texts to a multiple of N tokens and batch equal lengths only, so that a text's "
                            "result does not depend on the rest of its call (CPU; label: 8)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        token_budget=args.batch_tokens,
        max_batch_size=args.max_batch_size,
        max_length=args.max_length,
        long_text=args.long_text,
        num_threads=args.threads,
        pad_multiple=args.pad_multiple,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structsent", description="Fast Chinese sentiment labelling with StructBERT.")
    parser.add_argument("--version", action="version", version=f"structsent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # a subcommand whose module is not part of this installation
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("structsent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StructsentError as err:
        print(f"structsent: error: {err}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES.items() if isinstance(err, kind)), EXIT_FAILURE)
    except BrokenPipeError:
        return EXIT_OK  # `structsent label ... | head`: the reader has what it wanted


if __name__ == "__main__":
    sys.exit(main())
