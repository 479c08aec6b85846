"""Packed against padded attention on the CPU (torch backend): the same reviews in calls of several sizes.

A service merges the requests that queued while its model was busy into one call of reviews of
many lengths. Padded, the planner cuts such a call where a long review would pad short ones (many
small model calls); packed, it is one call with nothing padded. This labels the same real reviews
in calls of each ``--call-sizes`` (and in one call of them all) with ``attention="padded"`` and
with ``attention="auto"`` (packed on a CPU), alternating over ``--rounds``, and prints texts/s,
the model calls made, and how far packed is from padded (largest probability difference, labels
that differ), with the host's ISA on the first line.

    .venv/bin/python scripts/packed_bench.py --precisions fp32 int8 bf16 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model directory (default: the bundled model)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "int8", "bf16"])
    parser.add_argument("--call-sizes", type=int, nargs="+", default=[31, 64], help="reviews per call")
    parser.add_argument("--texts", type=int, default=2240, help="reviews labelled per measure")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--rounds", type=int, default=2, help="each measure this many times, alternating")
    return parser.parse_args(argv)


def reviews(count: int) -> list[str]:
    from load_bench import load_reviews  # (this script's directory is on the path: the same reviews)

    texts = load_reviews()
    if len(texts) < count:
        sys.exit(f"only {len(texts)} reviews found; pass --texts {len(texts)} or fewer")
    return texts[:count]


def measure(classifier, sequences: list, size: int):
    """(texts/s, model calls, logits) of ``sequences`` labelled in calls of ``size``."""
    import numpy as np

    started, calls, logits = time.perf_counter(), 0, []
    for start in range(0, len(sequences), size):
        out, stats = classifier.run_logits(sequences[start : start + size])
        calls += stats.batches
        logits.append(out)
    return len(sequences) / (time.perf_counter() - started), calls, np.concatenate(logits)


def compare(packed, padded) -> str:
    import numpy as np

    def probabilities(logits):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    difference = float(np.abs(probabilities(packed) - probabilities(padded)).max())
    differ = int((packed.argmax(axis=1) != padded.argmax(axis=1)).sum())
    return f"largest probability difference {difference:.2g}, {differ} label(s) differ"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import structsent
    from structsent.bench.host import describe_cpu

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"host: {describe_cpu()}; torch threads {torch.get_num_threads()}", flush=True)
    texts = reviews(args.texts)
    for precision in args.precisions:
        engines = {attention: structsent.load(args.model, backend="torch", precision=precision, attention=attention)
                   for attention in ("padded", "auto")}
        shown = {name: engine.info()["attention"] for name, engine in engines.items()}
        sequences = [e.sequences[0] for e in engines["padded"].encode(texts)]
        sizes = [*args.call_sizes, len(sequences)]
        for engine in engines.values():
            measure(engine, sequences[: 3 * sizes[0]], sizes[0])  # warm-up (allocations)
        rates: dict = {}
        for _ in range(args.rounds):
            for size in sizes:
                for name, engine in engines.items():
                    rate, calls, logits = measure(engine, sequences, size)
                    rates.setdefault((size, name), []).append(rate)
                    rates[(size, name, "calls")], rates[(size, name, "logits")] = calls, logits
        for size in sizes:
            what = "one call" if size == len(sequences) else f"calls of {size}"
            figures = "; ".join(
                f"{shown[name]} {', '.join(f'{r:.1f}' for r in rates[(size, name)])} texts/s "
                f"({rates[(size, name, 'calls')]} model calls)" for name in engines)
            print(f"{precision}, {len(sequences)} reviews in {what}: {figures}; "
                  f"{compare(rates[(size, 'auto', 'logits')], rates[(size, 'padded', 'logits')])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
