"""Speed and int8 fidelity of a model directory through structsent's own paths.

    python scripts/default_model/speed.py MODEL_DIR [--n 600] [--json OUT]

Every path the library offers on a CPU, each loaded with ``structsent.load`` exactly as a user
would: ONNX Runtime fp32 (the default), ONNX Runtime int8, torch fp32 and torch int8. For each:
texts/s on one call over ``--n`` texts of 50-500 characters (after a warm-up call), and the share
of labels equal to torch fp32's, on those texts and on every review of ``tests/data``. The build
(`build_default_model.py`, step 7) calls ``measure`` with its own held-out texts.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (backend, precision); torch fp32 is the reference the others are compared with.
PATHS = (("onnx", "fp32"), ("onnx", "int8"), ("torch", "fp32"), ("torch", "int8"))
REFERENCE = ("torch", "fp32")


def _import_structsent():
    try:
        import structsent
    except ImportError:  # the build environment runs the library from the source tree
        sys.path.insert(0, os.path.join(ROOT, "src"))
        import structsent
    return structsent


def evaluation_texts() -> list[str]:
    texts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle if line.strip()]
    return texts


def _labels_and_rate(clf, texts: list[str]) -> tuple[list[str | None], float]:
    clf(texts[:64])  # warm-up: the runtime's first calls allocate
    start = time.perf_counter()
    results = clf(texts)
    seconds = time.perf_counter() - start
    return [r.label for r in results], len(texts) / seconds


def _agreement(labels: list[str | None], reference: list[str | None]) -> float:
    return sum(a == b for a, b in zip(labels, reference)) / len(reference)


def measure(model_dir: str, long_texts: list[str], eval_texts: list[str], *, log=print) -> dict:
    """{'backend precision': {'texts_per_s', 'agreement_long', 'agreement_eval'}} and the host line."""
    structsent = _import_structsent()
    from structsent.bench.host import describe_cpu

    labels: dict[tuple[str, str], tuple[list, list, float]] = {}
    for backend, precision in PATHS:
        clf = structsent.load(model_dir, backend=backend, precision=precision)
        on_long, rate = _labels_and_rate(clf, long_texts)
        labels[backend, precision] = (on_long, [r.label for r in clf(eval_texts)], rate)
        log(f"  {backend} {precision}: {rate:.1f} texts/s")
        del clf
    ref_long, ref_eval, _ = labels[REFERENCE]
    out: dict = {"host": describe_cpu(), "texts": len(long_texts),
                 "mean_chars": sum(map(len, long_texts)) / len(long_texts), "eval_texts": len(eval_texts)}
    for (backend, precision), (on_long, on_eval, rate) in labels.items():
        out[f"{backend} {precision}"] = {"texts_per_s": rate, "agreement_long": _agreement(on_long, ref_long),
                                         "agreement_eval": _agreement(on_eval, ref_eval)}
    return out


def markdown(result: dict) -> str:
    lines = [f"{result['texts']} texts of 50-500 characters (mean {result['mean_chars']:.0f}), one call each; "
             f"{result['host']}", "",
             "| path | texts/s | labels equal to torch fp32: long texts | tests/data reviews |", "|---|---|---|---|"]
    for backend, precision in PATHS:
        row = result[f"{backend} {precision}"]
        lines.append(f"| {backend} {precision} | {row['texts_per_s']:.1f} | {row['agreement_long']:.2%} "
                     f"| {row['agreement_eval']:.2%} ({result['eval_texts']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="default")
    parser.add_argument("--n", type=int, default=600, help="texts of 50-500 characters to time")
    parser.add_argument("--eval-n", type=int, default=0, help="compare labels on this many tests/data reviews (0: all)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    _import_structsent()
    from structsent.bench.workload import build_workload

    long_texts = build_workload(args.n, seed=0).texts
    reviews = evaluation_texts()
    result = measure(args.model, long_texts, reviews[:args.eval_n] if args.eval_n else reviews)
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
