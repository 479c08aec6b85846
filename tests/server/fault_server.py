"""`structsent serve` with faults injected, for the failure-path tests of a real server process.

    python tests/server/fault_server.py LOAD_DELAY_S serve --model DIR --port N ...

The model load is delayed by LOAD_DELAY_S seconds (so /health can be seen loading; with
--workers N in each worker too: multiprocessing's spawn imports this file as __mp_main__), any
model batch holding the poison character raises, as a crashing kernel would, and any batch
holding the gate character waits until the file named by $FAULT_SERVER_GATE exists (so a
test can hold the model worker busy for exactly as long as it needs), and a sequence holding the
overflow character gets NaN logits, as weights that overflow on some inputs would give.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import structsent
from structsent.cli import main

POISON = "饕"
GATE = "闸"
OVERFLOW = "溢"
GATE_ENVIRONMENT_VARIABLE = "FAULT_SERVER_GATE"


def load_slowly_with_faults(seconds: float) -> None:
    """structsent.load, delayed, returning a classifier with the faults injected into it alone
    (not into the classifiers an export builds to validate itself on the packaged reviews)."""
    load = structsent.load

    def slow_faulty_load(*args, **kwargs):
        time.sleep(seconds)
        classifier = load(*args, **kwargs)
        # (the step label_encoded runs, past run_logits' check of caller-built sequences)
        classifier._run_sequences = types.MethodType(_run_or_fail(type(classifier)._run_sequences), classifier)
        return classifier

    structsent.load = slow_faulty_load


def _run_or_fail(run_logits):
    def run_or_fail(self, sequences, abandon=None, lanes=None):
        (poison_id,), (gate_id,), (overflow_id,) = self.tokenizer.content_ids([POISON, GATE, OVERFLOW])
        if any(poison_id in sequence for sequence in sequences):
            raise RuntimeError("injected fault: poison text in this batch")
        if any(gate_id in sequence for sequence in sequences):
            wait_for_gate()
        logits, stats = run_logits(self, sequences, abandon, lanes)
        for row, sequence in enumerate(sequences):
            if overflow_id in sequence:
                logits[row] = float("nan")
        return logits, stats

    return run_or_fail


def held_marker(gate: Path) -> Path:
    """The file the model worker writes once it is held at ``gate``: what tests wait for."""
    return gate.with_name(gate.name + ".held")


def wait_for_gate(timeout: float = 60) -> None:
    gate = Path(os.environ[GATE_ENVIRONMENT_VARIABLE])
    held_marker(gate).touch()
    deadline = time.monotonic() + timeout
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


if __name__ in ("__main__", "__mp_main__"):  # the second: in the worker processes of --workers N
    load_slowly_with_faults(float(sys.argv[1]))
if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
