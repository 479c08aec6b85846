"""`structsent serve` with faults injected, for the failure-path tests of a real server process.

    python tests/server/fault_server.py LOAD_DELAY_S serve --model DIR --port N ...

The model load is delayed by LOAD_DELAY_S seconds (so /health can be seen loading), any
model batch holding the poison character raises, as a crashing kernel would, and any batch
holding the gate character waits until the file named by $STRUCTSENT_FAULT_GATE exists (so a
test can hold the model worker busy for exactly as long as it needs).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import structsent
from structsent.cli import main
from structsent.engine import Classifier

POISON = "饕"
GATE = "闸"
GATE_ENVIRONMENT_VARIABLE = "STRUCTSENT_FAULT_GATE"


def delay_loading(seconds: float) -> None:
    load = structsent.load

    def slow_load(*args, **kwargs):
        time.sleep(seconds)
        return load(*args, **kwargs)

    structsent.load = slow_load


def fail_on_poison() -> None:
    run_logits = Classifier.run_logits

    def run_or_fail(self, sequences):
        (poison_id,), (gate_id,) = self.tokenizer.content_ids([POISON, GATE])
        if any(poison_id in sequence for sequence in sequences):
            raise RuntimeError("injected fault: poison text in this batch")
        if any(gate_id in sequence for sequence in sequences):
            wait_for_gate()
        return run_logits(self, sequences)

    Classifier.run_logits = run_or_fail


def wait_for_gate(timeout: float = 60) -> None:
    gate = Path(os.environ[GATE_ENVIRONMENT_VARIABLE])
    deadline = time.monotonic() + timeout
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


if __name__ == "__main__":
    delay_loading(float(sys.argv[1]))
    fail_on_poison()
    sys.exit(main(sys.argv[2:]))
