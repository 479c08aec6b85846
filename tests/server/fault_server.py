"""`structsent serve` with faults injected, for the failure-path tests of a real server process.

    python tests/server/fault_server.py LOAD_DELAY_S serve --model DIR --port N ...

The model load is delayed by LOAD_DELAY_S seconds (so /health can be seen loading), and any
model batch holding the poison character raises, as a crashing kernel would.
"""

from __future__ import annotations

import sys
import time

import structsent
from structsent.cli import main
from structsent.engine import Classifier

POISON = "饕"


def delay_loading(seconds: float) -> None:
    load = structsent.load

    def slow_load(*args, **kwargs):
        time.sleep(seconds)
        return load(*args, **kwargs)

    structsent.load = slow_load


def fail_on_poison() -> None:
    run_logits = Classifier.run_logits

    def run_or_fail(self, sequences):
        (poison_id,) = self.tokenizer.content_ids([POISON])[0]
        if any(poison_id in sequence for sequence in sequences):
            raise RuntimeError("injected fault: poison text in this batch")
        return run_logits(self, sequences)

    Classifier.run_logits = run_or_fail


if __name__ == "__main__":
    delay_loading(float(sys.argv[1]))
    fail_on_poison()
    sys.exit(main(sys.argv[2:]))
