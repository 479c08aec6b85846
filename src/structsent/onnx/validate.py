"""How an exported model agrees with the fp32 PyTorch reference, on texts given as arguments."""

from __future__ import annotations

import dataclasses
import itertools
import json
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import BadInputError
from ..io.formats import Format, suffixes_of
from ..io.paths import kind_of, mode_of

SAMPLE_REVIEWS = Path(__file__).resolve().parents[1] / "data" / "sample_reviews.txt"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyReport:
    """How an exported model agrees with the fp32 PyTorch reference."""

    texts: int
    source: str
    label_agreement: float  # share of texts with the same label (a text only one side labels: different)
    max_probability_diff: float  # largest absolute difference of any class probability, where both label
    labelled_by_one: int = 0  # texts one side labelled and the other flagged (non-finite outputs, say)
    flagged_by_both: int = 0  # texts given that neither side labelled (empty ones, say): left out of ``texts``

    def summary(self) -> str:
        one_sided = (f"; {self.labelled_by_one} of them labelled by only one of the two, counted as disagreeing"
                     if self.labelled_by_one else "")
        left_out = (f"; {self.flagged_by_both} more flagged by both and left out" if self.flagged_by_both else "")
        return (
            f"label agreement {self.label_agreement:.2%} and largest probability difference "
            f"{self.max_probability_diff:.2e} vs torch fp32 on {self.texts} texts ({self.source}{one_sided}{left_out})"
        )


def compare_with_reference(checkpoint, onnx_dir: Path, texts: Sequence[str], source: str) -> AccuracyReport:
    """Label agreement and largest probability difference of the ONNX model vs torch fp32."""
    from ..backends.onnx import OnnxRunner
    from ..backends.torch import TorchRunner
    from ..config import Backend, EngineConfig, Precision
    from ..engine import Classifier, check_model_outputs
    from ..models.onnx import MODEL_FILE, load_onnx_directory
    from ..plan import plan_for

    config = EngineConfig(device="cpu")
    reference_plan = plan_for(config, backend=Backend.TORCH, device="cpu", precision=Precision.FP32,
                              max_positions=checkpoint.shape.max_position_embeddings)
    reference = Classifier(checkpoint, TorchRunner(checkpoint, reference_plan), reference_plan)
    check_model_outputs(reference)  # weights that overflow are a ModelFormatError, not a failed comparison
    exported = load_onnx_directory(onnx_dir)
    candidate_plan = reference_plan.replace(backend=Backend.ONNX, precision=Precision(exported.precision),
                                            model_file=Path(onnx_dir) / MODEL_FILE)
    candidate = Classifier(exported, OnnxRunner(candidate_plan), candidate_plan)
    return agreement(reference(list(texts)), candidate(list(texts)), source=source)


def agreement(reference, candidate, *, source: str) -> AccuracyReport:
    """Compare two lists of LabelResults of the same texts. A text both flag (an empty one) is left
    out; a text only one labels counts as a disagreement (it was left out without a word, and an
    export that labelled texts the reference could not reported 100%)."""
    compared = [(r, c) for r, c in zip(reference, candidate, strict=True) if r.ok or c.ok]
    if not compared:
        raise BadInputError(f"no labellable validation texts in {source}")
    both = [(r, c) for r, c in compared if r.ok and c.ok]
    same = sum(r.label == c.label for r, c in both)
    diff = max((abs(r.scores[k] - c.scores[k]) for r, c in both for k in r.scores), default=0.0)
    return AccuracyReport(texts=len(compared), source=source, label_agreement=same / len(compared),
                          max_probability_diff=float(diff), labelled_by_one=len(compared) - len(both),
                          flagged_by_both=len(reference) - len(compared))


def packaged_sample_texts(limit: int | None = None) -> tuple[list[str], str]:
    """The reviews packaged with structsent (the first ``limit``): what an export is checked on by default."""
    return read_texts(SAMPLE_REVIEWS, limit), "structsent/data/sample_reviews.txt"


def is_json_lines(path: Path) -> bool:
    """Named as `label` names JSON Lines: .jsonl, .ndjson or .json, in any case."""
    return Path(path).suffix.lower() in {f".{suffix}" for suffix in suffixes_of(Format.JSONL)}


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """Lines of a text file, or the "text" field of a JSONL file (named so: ``is_json_lines``): the
    first ``limit`` non-blank ones, read line by line. The whole file was read whatever the limit
    (``--validate /dev/zero --validate-n 1`` ran out of memory): a file that is not a regular one
    (a device, a named pipe, a directory) is refused, and reading stops at ``limit`` texts."""
    _check_texts_file(Path(path))
    json_lines = is_json_lines(path)
    try:
        with open(path, "rb") as file:
            texts = (_text_of(path, line, number) if json_lines else line
                     for number, line in enumerate(_non_blank_lines(file), 1))
            # islice stops at ``limit`` without asking for the next line (it may be past what is readable)
            return list(itertools.islice(texts, limit))
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read texts ({err})") from err


def _check_texts_file(path: Path) -> None:
    mode = mode_of(path)
    if mode is not None and not stat.S_ISREG(mode):  # a missing file: the read says so
        raise BadInputError(f"{path}: is {kind_of(mode)}, not a file of texts (one per line, or JSON Lines "
                            "with 'text')")


def _non_blank_lines(file) -> Iterator[str]:
    """The file's lines as ``str.splitlines`` splits them (a form feed or U+2028 ends one too), each
    decoded as it is reached (a text file decodes ahead, and failed on bytes past the texts asked for)."""
    for index, physical in enumerate(file):
        # utf-8-sig: a byte-order mark opens the file, it is not part of the first text
        decoded = physical.decode("utf-8-sig" if index == 0 else "utf-8")
        yield from (line for line in decoded.splitlines() if line.strip())


def _text_of(path: Path, line: str, number: int) -> str:
    try:
        text = json.loads(line)["text"]
    except (ValueError, RecursionError, KeyError, TypeError) as err:
        raise BadInputError(f"{path}: expected one JSON object with a 'text' field per line "
                            f"(non-blank line {number})") from err
    if not isinstance(text, str):  # null is no text to compare on ("None" is not what the file holds)
        raise BadInputError(f"{path}: non-blank line {number}: 'text' is {json.dumps(text)[:40]}, not a string")
    return text
