import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = sys.executable


def structsent(*args, input_bytes=None, check=True, timeout=120, env=None):
    """Run the real command line in a subprocess."""
    proc = subprocess.run(
        [PYTHON, "-m", "structsent", *map(str, args)],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc


def read_jsonl_bytes(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def reviews_file(tmp_path_factory, real_reviews) -> Path:
    """A few thousand rows with repeats and bad rows mixed in, as plain text."""
    path = tmp_path_factory.mktemp("reviews") / "reviews.txt"
    lines = []
    for i in range(3000):
        lines.append(real_reviews[i % len(real_reviews)].replace("\n", " "))
        if i % 97 == 0:
            lines.append("好评！")
        if i % 501 == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
