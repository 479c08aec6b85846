"""`structsent export MODEL -o DIR`: flags in, ``onnx.export.export_checkpoint``, a report out.

    $ structsent export default -o model-int8 --int8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..lines import one_line
from .numbers import integer
from .paths import file_path

DEFAULT_VALIDATION_TEXTS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="'default' (bundled), a checkpoint directory, or a hub id")
    # A str, not a Path: Path("") is ".", and an empty -o must be refused, not read as the current directory.
    parser.add_argument("-o", "--output", required=True,
                        help="directory to write the ONNX model to: new or empty, its parent existing, apart from "
                             "the source checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier ONNX export in --output (the new export is written beside it "
                             "and renamed into place when complete)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantization (CPU)")
    # Not an option of export: said as such, with the flag that is (it was "unrecognized arguments").
    parser.add_argument("--precision", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="skip ONNX Runtime's BERT fusions (attention, LayerNorm, GELU); by default the graph "
                             "is fused, as the export cache does")
    parser.add_argument("--validate", type=file_path, default=None,
                        help="texts (one per line, or JSONL with 'text') to check the export against torch fp32, "
                             "e.g. a held-out set; default: the packaged sample reviews")
    parser.add_argument("--validate-n", type=integer, default=DEFAULT_VALIDATION_TEXTS,
                        help="at most this many validation texts (0: skip the check)")


def run(args: argparse.Namespace) -> int:
    from ..config import Precision
    from ..errors import BadInputError, ConfigError
    from ..models import load_checkpoint
    from ..models.onnx import MODEL_FILE
    from ..onnx.export import ExportOptions, check_output_directory, export_checkpoint
    from ..onnx.validate import packaged_sample_texts
    from .signals import sigterm_as_interrupt

    if args.precision is not None:
        raise ConfigError("export has no --precision: it writes fp32, or int8 with --int8 (an ONNX export holds no "
                          "fp16 or bf16: the torch backend runs those from the source checkpoint)")
    if args.validate_n < 0:
        raise ConfigError("--validate-n must be at least 0")
    _warn_of_engine_variables()
    options = ExportOptions(precision=Precision.INT8 if args.int8 else Precision.FP32, optimize=args.optimize)
    checkpoint = load_checkpoint(args.model)
    check_output_directory(args.output, checkpoint.directory, overwrite=args.overwrite)  # before the slow parts
    texts: list[str] = []
    source = ""
    if args.validate_n:
        texts, source = ((_validation_texts(args.validate, args.validate_n), str(args.validate)) if args.validate
                         else packaged_sample_texts(args.validate_n))
        if args.int8 and not args.validate:  # the figure would be read as held-out agreement
            source += " (the texts int8's smoothing is calibrated on: --validate FILE for held-out ones)"
        if not texts:  # checked before the export: a validation asked for is never skipped quietly
            raise BadInputError(f"--validate {args.validate}: no texts in it (pass --validate-n 0 to skip validation)")
        if args.validate:
            _check_labellable(checkpoint.tokenizer, texts, args.validate)
    with sigterm_as_interrupt():  # its staging directory is removed as on Ctrl-C
        report = export_checkpoint(checkpoint, args.output, options, validation_texts=texts,
                                   validation_source=source, overwrite=args.overwrite)
    # The output's and the --validate file's names as one line each (a line break in a name split
    # the line; an escape sequence reached the terminal): see ``lines.one_line``.
    print(one_line(f"wrote {report.directory / MODEL_FILE} ({options.describe()}) in {report.seconds:.1f}s"))
    if report.fused_operators:
        print("fused operators: " + ", ".join(f"{k} {v}" for k, v in report.fused_operators.items()))
    if report.accuracy:
        print(one_line(report.accuracy.summary()))
    return 0


def _warn_of_engine_variables() -> None:
    """An engine setting's STRUCTSENT_* variable is not an export's setting: STRUCTSENT_PRECISION=int8
    wrote an fp32 export without a word (its flags say what is written; the graph takes any length,
    batch and thread count)."""
    import os
    import sys

    from .engine_flags import unread_setting_variables

    for variable in unread_setting_variables((), os.environ):
        print(f"structsent: warning: {variable} is set, but export does not read it: its flags choose what is "
              "written (--int8, --no-optimize)", file=sys.stderr)


def _validation_texts(path: Path, limit: int) -> list[str]:
    """The first ``limit`` texts of the --validate file; a file that cannot give them (a device, a
    directory, bytes that are not UTF-8) is a one-line error naming the flag."""
    from ..errors import BadInputError
    from ..onnx.validate import read_texts

    try:
        return read_texts(path, limit)
    except BadInputError as err:
        raise BadInputError(f"--validate {err}") from err


def _check_labellable(tokenizer, texts: list[str], path: Path) -> None:
    """Texts of which the tokenizer leaves nothing (NUL or control characters only) are flagged on both
    sides of the validation, which then had nothing to compare: that was said after the whole export
    ran, without naming the file. They are tokenized here, as the validation will, before the export."""
    from ..errors import BadInputError

    encoded = tokenizer.encode(texts)
    if all(e.error is not None for e in encoded):
        raise BadInputError(f"--validate {path}: no labellable texts in it (none of the {len(texts)} read can be "
                            f"labelled, e.g. {texts[0][:40]!r}: {encoded[0].error}); give texts to label, or "
                            "pass --validate-n 0 to skip validation")
