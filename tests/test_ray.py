"""The Ray Data adapter on a real local Ray: same results as the local engine, exactly once, even
when an actor dies mid-job; and `structsent label --engine ray` through the real command line."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from structsent.errors import BadInputError, MissingExtraError  # noqa: E402
from structsent.io.formats import Format  # noqa: E402
from structsent.jobs.label import LabelJob, LabelJobSpec  # noqa: E402
from structsent.ray import label_dataset, resolve_input  # noqa: E402

from .conftest import run_structsent  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5
PREDICTIONS = ["label", "score", "prob_负面", "prob_正面", "error"]
BAD_TEXTS = [None, "", "   "]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address():
    """A real local Ray, small: two CPUs, a 200 MB object store, loopback only.

    ray.init() turns token authentication on (RAY_AUTH_MODE=token, which the CLI subprocesses
    inherit) and takes the token from RAY_AUTH_TOKEN: without it, it would write one to
    ~/.ray/auth_token, where every later `ray start` on this machine finds it.
    """
    mode_before = os.environ.get("RAY_AUTH_MODE")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
            if mode_before is None:
                os.environ.pop("RAY_AUTH_MODE", None)


@pytest.fixture(scope="module")
def reviews_table(real_reviews):
    """Real reviews with ids, an extra column, repeats and bad texts mixed in."""
    texts = [t for t in real_reviews[:330]] + real_reviews[:20] + BAD_TEXTS * 3
    return pa.table({
        "id": [f"r{i:04d}" for i in range(len(texts))],
        "text": texts,
        "stars": [i % 5 for i in range(len(texts))],
    })


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory, reviews_table) -> Path:
    """The reviews split into three Parquet files (plus a file Ray and the resolver must skip)."""
    directory = tmp_path_factory.mktemp("ray_in")
    rows = reviews_table.num_rows
    for part, start in enumerate(range(0, rows, rows // 3 + 1)):
        pq.write_table(reviews_table.slice(start, rows // 3 + 1), directory / f"part-{part}.parquet")
    (directory / "_SUCCESS").write_text("")
    return directory


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, clf, reviews_table) -> dict[str, dict]:
    """The local engine's `structsent label` output for the same rows, by id."""
    directory = tmp_path_factory.mktemp("local")
    source, output = directory / "in.parquet", directory / "out.parquet"
    pq.write_table(reviews_table, source)
    spec = LabelJobSpec(input=str(source), output=str(output), input_format=Format.PARQUET,
                        output_format=Format.PARQUET)
    LabelJob(spec, clf).run()
    table = pq.read_table(output)
    assert table.column_names == [*reviews_table.column_names, *PREDICTIONS]
    return {row["id"]: row for row in table.to_pylist()}


def assert_same_as_local(rows: list[dict], local_rows: dict[str, dict], columns: list[str] | None = None) -> None:
    """Every id exactly once, each row with the local engine's label, probabilities and error."""
    ids = [row["id"] for row in rows]
    assert sorted(ids) == sorted(local_rows), "rows lost or duplicated"
    for row in rows:
        expected = local_rows[row["id"]]
        for column in columns or expected:
            value, reference = row[column], expected[column]
            if isinstance(reference, float):
                assert value is not None and abs(value - reference) < TOLERANCE, (row["id"], column)
            else:
                assert value == reference, (row["id"], column)


def crash_once_labeller(marker: Path, at_call: int):
    """A labeller that kills its own process on its ``at_call``-th call, in one actor only.

    Calls before it have already returned batches of the same task, so a retry that kept them
    and also recomputed them would duplicate rows.
    """
    from structsent.ray import DatasetLabeller

    class CrashOnce(DatasetLabeller):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == at_call:
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one crash in all actors
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os._exit(1)
            return super().__call__(batch)

    return CrashOnce


def run_cli(*args, timeout: int = 180) -> subprocess.CompletedProcess:
    return run_structsent("label", *args, timeout=timeout)


# -- without Ray running ------------------------------------------------------------------------
def test_missing_ray_names_the_extra(monkeypatch):
    from structsent.ray.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'structsent\[ray\]'"):
        import_ray()


def test_resolve_input_takes_a_file_a_directory_or_a_glob(tmp_path, parquet_dir):
    parts = sorted(str(p) for p in parquet_dir.glob("part-*.parquet"))
    directory = resolve_input(str(parquet_dir))
    assert directory.paths == directory.files == parts  # _SUCCESS skipped
    assert directory.suffixes is None  # the files themselves: Ray lists nothing
    pattern = resolve_input(str(parquet_dir / "part-*.parquet"))
    assert pattern.paths == parts and pattern.format is Format.PARQUET
    assert resolve_input(parts[0]).paths == parts[:1]
    (tmp_path / "a.csv").write_text("text\nx\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(BadInputError, match="one format"):
        resolve_input(str(tmp_path))
    with pytest.raises(BadInputError, match="use --engine local"):
        resolve_input(str(tmp_path / "a.csv"), "txt")
    with pytest.raises(BadInputError, match="no file matches"):
        resolve_input(str(tmp_path / "missing*.csv"))


@pytest.mark.parametrize("flags,code,message", [
    (["--resume"], 2, b"--engine local only"),
    (["--on-bad-row", "flag"], 2, b"--engine local only"),
    (["--report-by", "stars"], 2, b"--report-by needs --report FILE"),
    (["--output-format", "tsv"], 2, b"writes Parquet, CSV or JSONL"),
    (["--model", "/nonexistent/model"], 3, b"no such model directory"),
])
def test_cli_rejects_bad_runs_before_starting_ray(tmp_path, parquet_dir, flags, code, message):
    proc = run_cli("--engine", "ray", parquet_dir, "-o", tmp_path / "out", *flags)
    assert proc.returncode == code
    assert message in proc.stderr


def test_an_empty_csv_among_the_inputs_is_a_one_line_error_before_starting_ray(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"")
    (tmp_path / "in" / "b.csv").write_text("id,text\n1,好吃\n", encoding="utf-8")
    proc = run_cli("--engine", "ray", tmp_path / "in", "-o", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
    assert b"a.csv: empty file (no header row)" in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("named", ["out", "link", "./link/"])
def test_a_job_on_an_output_directory_another_job_is_writing_is_refused_and_touches_nothing(tmp_path, parquet_dir,
                                                                                          overwrite, named, monkeypatch):
    """Two jobs on one output directory at once left both jobs' files in it: every row twice (and an
    --overwrite job emptied the other's files while it wrote). The lock is the one a job holds."""
    from structsent.ray.outputs import output_directory_lock

    (tmp_path / "out").mkdir()  # the other job has written a part already: named by the lock, not by its files
    written = ["part.parquet"]
    for name in written:
        (tmp_path / "out" / name).write_bytes(b"the other job's rows")
    (tmp_path / "link").symlink_to("out")  # another name of the same directory takes the same lock
    monkeypatch.chdir(tmp_path)
    with output_directory_lock(str(tmp_path / "out")):
        proc = run_cli("--engine", "ray", parquet_dir, "-o", named, *overwrite)
    message = proc.stderr.decode()
    assert proc.returncode == 2 and message.count("\n") == 1, message
    assert f"another structsent label job (PID {os.getpid()}) is writing this output" in message
    assert [p.name for p in (tmp_path / "out").iterdir()] == written
    assert not (tmp_path / "out.lock").exists()  # the holder removes it as it lets go


@pytest.mark.parametrize("where", ["the input directory", "inside the input directory", "holding an input glob"])
def test_cli_refuses_an_output_that_overlaps_the_input_and_deletes_nothing(tmp_path, reviews_table, where):
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(reviews_table, source / "a.parquet")
    target, input_arg = {"the input directory": (source, source),
                         "inside the input directory": (source / "out", source),
                         "holding an input glob": (source, str(source / "*.parquet"))}[where]
    proc = run_cli("--engine", "ray", input_arg, "-o", target, "--overwrite")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and b"Traceback" not in proc.stderr
    assert b"holds the input" in proc.stderr or b"is inside the input directory" in proc.stderr
    assert pq.read_table(source / "a.parquet").num_rows == reviews_table.num_rows


@pytest.mark.parametrize(("flags", "message"), [
    (["--token-budget", "100"], b"--token-budget 100: must be at least max_length"),
    (["--backend", "onnx", "--attention", "packed"], b"--attention packed runs with the torch backend"),
    (["--backend", "onnx", "--precision", "bf16"], b"not offered by the onnx backend"),
])
def test_cli_refuses_settings_the_model_cannot_run_with_before_starting_ray(tmp_path, parquet_dir, flags, message):
    """Found in each actor after Ray started: exit 1 and ~170 lines of worker tracebacks."""
    proc = run_cli("--engine", "ray", parquet_dir, "-o", tmp_path / "out", *flags)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_broken_model_before_starting_ray(tmp_path, parquet_dir, hf_model_dir):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan_model"
    shutil.copytree(hf_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if k.endswith("LayerNorm.weight"))
    weights[name][0] = float("nan")
    save_file(weights, broken / "model.safetensors")
    proc = run_cli("--engine", "ray", parquet_dir, "-o", tmp_path / "out", "--model", broken)
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and b"non-finite" in proc.stderr


def test_cli_fails_fast_on_an_unreachable_cluster(tmp_path, parquet_dir):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_cli("--engine", "ray", "--ray-address", f"127.0.0.1:{port}", parquet_dir, "-o", tmp_path / "out",
                   timeout=60)
    assert proc.returncode == 2
    assert b"cannot reach the Ray cluster" in proc.stderr


def test_cli_refuses_an_address_of_a_scheme_ray_does_not_know_in_one_line(tmp_path, parquet_dir):
    """`rya://` (a typo of ray://) ended in Ray's RuntimeError traceback, exit 1."""
    proc = run_cli("--engine", "ray", "--ray-address", "rya://head:10001", parquet_dir, "-o", tmp_path / "out",
                   timeout=120)
    assert proc.returncode == 2 and proc.stderr.decode().splitlines() == [
        "structsent: error: --ray-address rya://head:10001: Module: rya does not exist. (expected host:port, "
        "ray://host:port or auto)"]


# -- on a real local Ray ------------------------------------------------------------------------
def test_label_dataset_matches_the_local_engine(ray_address, hf_model_dir, parquet_dir, local_rows):
    ds = ray.data.read_parquet(str(parquet_dir))
    labelled = label_dataset(ds, model=hf_model_dir, concurrency=2, num_cpus=0.5, batch_size=100)
    rows = labelled.take_all()
    assert list(rows[0]) == ["id", "text", "stars", *PREDICTIONS]
    assert_same_as_local(rows, local_rows)
    assert sum(1 for row in rows if row["error"] is not None) == len(BAD_TEXTS) * 3


def test_an_actor_freezes_its_startup_objects_and_the_driver_is_left_alone(ray_address, hf_model_dir):
    import gc

    from structsent.ray import DatasetLabeller

    @ray.remote(num_cpus=0.5)
    class Probe:
        def __init__(self, model):
            self.labeller = DatasetLabeller(model)

        def frozen(self):
            return gc.get_freeze_count()

    probe = Probe.remote(hf_model_dir)
    assert ray.get(probe.frozen.remote()) > 10_000  # the modules and the model, out of full collections
    ray.kill(probe)
    DatasetLabeller(hf_model_dir)  # a user's own process (here the driver's) is not frozen behind its back
    assert gc.get_freeze_count() == 0


def test_a_path_named_default_reaches_the_actors_as_that_directory(tmp_path, monkeypatch):
    """str(Path("default")) is "default": the actors loaded the bundled model."""
    from structsent.ray.labeller import _model_name

    monkeypatch.chdir(tmp_path)
    assert _model_name(Path("default")) == str(tmp_path / "default")
    assert _model_name("default") == "default" and _model_name("org/model") == "org/model"


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "8", True])
def test_a_batch_size_that_is_not_a_positive_int_or_none_is_refused(batch_size):
    from structsent.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a positive int, or None for whole blocks"):
        label_dataset(None, batch_size=batch_size)  # checked before the dataset is touched


def test_label_dataset_with_batch_size_none_labels_whole_blocks(ray_address, hf_model_dir, local_rows):
    """batch_size=None (one call per block, as Ray's own map_batches takes it) was a TypeError."""
    expected = [row for row in local_rows.values() if row["error"] is None][:40]
    ds = ray.data.from_items([{"id": i, "text": row["text"]} for i, row in enumerate(expected)])
    rows = label_dataset(ds, model=hf_model_dir, num_cpus=0.5, batch_size=None).take_all()
    assert [row["id"] for row in rows] == list(range(40))
    assert [row["label"] for row in rows] == [row["label"] for row in expected]
    assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-6)


def test_the_labeller_refuses_a_binary_text_as_the_local_parquet_reader_does(tmp_path, hf_model_dir):
    """Bytes that are not UTF-8 were flagged "not a string (got bytes)" here and "the text is bytes
    that are not UTF-8" by the local job: one reason now, from one helper."""
    from structsent.io.readers import ParquetReader
    from structsent.ray import DatasetLabeller

    table = pa.table({"id": [1, 2, 3], "text": pa.array(["好吃".encode(), b"\xff\xfe", None], pa.binary())})
    pq.write_table(table, tmp_path / "a.parquet")
    local = [row.error for row in ParquetReader(str(tmp_path / "a.parquet"), rows_done=0, text_column="text")]
    labelled = DatasetLabeller(hf_model_dir)(table)
    assert labelled.column("id").to_pylist() == [1, 2, 3]
    errors = labelled.column("error").to_pylist()
    assert errors[0] is None and labelled.column("label").to_pylist()[0] is not None
    assert errors[1] == local[1] == "the text is bytes that are not UTF-8"
    assert errors[2] is not None and local[2] is None  # a null text: flagged by the classifier in both


def test_cuda_on_a_cluster_without_a_gpu_is_refused_not_waited_for(ray_address):
    from structsent.config import EngineConfig
    from structsent.errors import ConfigError
    from structsent.ray.cluster import actor_pool_for

    assert ray.cluster_resources().get("GPU", 0) == 0  # this machine's local Ray
    with pytest.raises(ConfigError, match="--device cuda: the Ray cluster has no GPU"):
        actor_pool_for(ray, EngineConfig(device="cuda"))
    assert actor_pool_for(ray, EngineConfig(device="auto")) == {"concurrency": 1, "num_cpus": 1}


def test_bad_columns_fail_on_the_driver(ray_address, hf_model_dir, parquet_dir, tmp_path):
    # the advice names the library's argument first: it said only "Pass --text-column NAME", a flag
    with pytest.raises(BadInputError, match=r"no column 'review'; .* Pass text_column=NAME \(--text-column NAME on"):
        label_dataset(ray.data.read_parquet(str(parquet_dir)), model=hf_model_dir, text_column="review")
    pq.write_table(pa.table({"text": ["好评"], "label": ["正面"]}), tmp_path / "labelled.parquet")
    with pytest.raises(BadInputError, match="--prefix"):
        label_dataset(ray.data.read_parquet(str(tmp_path)), model=hf_model_dir)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_actor_killed_mid_job_is_retried_and_output_is_exactly_once(ray_address, hf_model_dir, parquet_dir,
                                                                     local_rows, tmp_path):
    marker = tmp_path / "crashed"
    labelled = label_dataset(
        ray.data.read_parquet(str(parquet_dir)), model=hf_model_dir, concurrency=2, num_cpus=0.5, batch_size=40,
        labeller=crash_once_labeller(marker, at_call=2),
        ray_remote_args={"max_restarts": -1, "max_task_retries": -1},
    )
    rows = labelled.take_all()
    assert marker.exists(), "no actor crashed: the test proved nothing"
    assert_same_as_local(rows, local_rows)


def test_cli_engine_ray_on_a_directory_of_parquet(ray_address, hf_model_dir, parquet_dir, local_rows, tmp_path):
    output, report = tmp_path / "out", tmp_path / "report.html"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, parquet_dir, "-o", output,
                   "--model", hf_model_dir, "--device", "cpu", "--quiet", "--report", report, "--report-by", "stars")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    table = pq.read_table(output)
    assert table.column_names == ["id", "text", "stars", *PREDICTIONS]
    assert_same_as_local(table.to_pylist(), local_rows)
    # --report: the directory's files read as one output, the same page `structsent report` writes
    from structsent.report import write_report

    page = report.read_text(encoding="utf-8")
    summary = write_report(output, tmp_path / "again.html", by="stars")
    rows = table.to_pylist()
    assert summary.rows == len(rows) and summary.flagged == sum(r["error"] is not None for r in rows)
    assert {k: v for k, v in summary.labels.items() if v} == dict(Counter(r["label"] for r in rows if r["error"] is None))
    assert f'<dd id="total-rows">{len(rows)}</dd>' in page and 'id="groups"' in page


@pytest.mark.parametrize("where", ["an input file", "inside the input directory"])
def test_cli_engine_ray_never_writes_its_report_over_its_input(tmp_path, reviews_table, where):
    """`label --engine ray --report IN.csv --overwrite` replaced the input with the page (the local
    engine refused it): the input's files are kept from the report as the output is."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("id,text\n1,好评\n", encoding="utf-8")
    before = (source / "a.csv").read_bytes()
    report = source / "a.csv" if where == "an input file" else source / "r.html"
    given = source / "a.csv" if where == "an input file" else source
    proc = run_cli("--engine", "ray", given, "-o", tmp_path / "out", "--report", report, "--overwrite")
    expected = b"the report would overwrite the job's input" if where == "an input file" else \
        b"the report would be written inside the job's input"
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert (source / "a.csv").read_bytes() == before and not (tmp_path / "out").exists()
    assert sorted(p.name for p in source.iterdir()) == ["a.csv"]


def test_cli_engine_ray_refuses_a_report_inside_its_output_before_starting_ray(tmp_path, parquet_dir):
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", parquet_dir, "-o", output, "--report", output / "r.html")
    assert proc.returncode == 2 and b"would be written inside the job's output directory" in proc.stderr
    assert not output.exists()


def test_cli_engine_ray_csv_to_jsonl_with_id_column(ray_address, hf_model_dir, reviews_table, local_rows,
                                                    tmp_path):
    rows = reviews_table.to_pylist()
    (tmp_path / "in").mkdir()
    for part in range(2):
        with open(tmp_path / "in" / f"part-{part}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "stars"])
            writer.writerows([r["id"], r["text"] or "", r["stars"]] for r in rows[part::2] if r["text"] is not None)
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, tmp_path / "in", "-o", output,
                   "--output-format", "jsonl", "--id-column", "id", "--model", hf_model_dir, "--device", "cpu",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    written = [json.loads(line) for path in sorted(output.glob("*.json*"))
               for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(list(row) == ["id", *PREDICTIONS] for row in written)
    expected = {k: v for k, v in local_rows.items() if v["text"] is not None}
    assert sorted(r["id"] for r in written) == sorted(expected)
    for row in written:
        reference = expected[row["id"]]
        assert row["label"] == reference["label"]
        if reference["error"] is None:
            assert abs(row["prob_正面"] - reference["prob_正面"]) < TOLERANCE
        else:
            assert row["error"] == reference["error"]


@pytest.mark.parametrize("output_format", ["parquet", "csv", "jsonl"])
def test_cli_engine_ray_writes_json_values_of_mixed_types_as_the_local_writers_do(ray_address, hf_model_dir,
                                                                                   tmp_path, output_format):
    """A JSONL text column holding a number, null, a list and an object among its strings: Ray
    holds such a column as pickled objects, which no writer (nor a Parquet reader without Ray) takes.
    CSV and Parquet get their JSON text; JSON Lines the values as they were (they were text too)."""
    values = ["很好吃", 5, None, ["a", "好"], {"k": 1}, "太差了", True]
    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": v}, ensure_ascii=False) + "\n"
                              for i, v in enumerate(values)), encoding="utf-8")
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, source, "-o", output, "--output-format",
                   output_format, "--model", hf_model_dir, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    if output_format == "parquet":
        rows = pq.read_table(output).to_pylist()
    elif output_format == "csv":
        rows = [dict(row, id=int(row["id"]), text=row["text"] or None)  # CSV has no null
                for path in sorted(output.glob("*.csv"))
                for row in csv.DictReader(path.read_text(encoding="utf-8").splitlines())]
    else:
        rows = [json.loads(line) for path in sorted(output.glob("*.json*"))
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(values)))
    as_text = ["很好吃", "5", None, '["a", "好"]', '{"k": 1}', "太差了", "true"]
    assert [row["text"] for row in rows] == (values if output_format == "jsonl" else as_text)
    assert [row["error"] or None for row in rows] == [
        None, "not a string (got int)", "missing text (None)", "not a string (got list)",
        "not a string (got dict)", None, "not a string (got bool)",
    ]
    assert rows[0]["label"] in ("负面", "正面") and rows[5]["label"] in ("负面", "正面")


def test_cli_engine_ray_keeps_the_columns_of_every_csv_file_strings(ray_address, hf_model_dir, tmp_path):
    """A column only a later file has ("code") was typed by Arrow: "007" came out as 7."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,text\n001,好吃\n", encoding="utf-8")
    (tmp_path / "in" / "b.csv").write_text("id,text,code\n002,差评,007\n003,一般,0010\n", encoding="utf-8")
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, tmp_path / "in", "-o", output,
                   "--output-format", "jsonl", "--model", hf_model_dir, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    rows = sorted((json.loads(line) for path in output.glob("*.json*")
                   for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), key=lambda r: r["id"])
    assert [(r["id"], r.get("code")) for r in rows] == [("001", None), ("002", "007"), ("003", "0010")]


@pytest.mark.parametrize("input_format", ["jsonl", "parquet written by pandas"])
def test_cli_engine_ray_jsonl_output_keeps_integers_beside_nulls(ray_address, hf_model_dir, tmp_path, input_format):
    """Files that disagree on a field (JSON Lines; Parquet files pandas wrote): Ray merged their
    blocks through pandas, so the field's integers came out as floats, 2**53 + 1 as
    9007199254740992.0, and 7 as 7.0. The lines are the local job's (pandas wrote a timestamp as
    epoch milliseconds, and no space after a colon)."""
    import pandas as pd

    (tmp_path / "in").mkdir()
    big = 2**53 + 1
    if input_format == "jsonl":
        (tmp_path / "in" / "a.jsonl").write_text('{"text": "好吃", "n": %d}\n{"text": "一般", "n": 7}\n' % big,
                                                 encoding="utf-8")
        (tmp_path / "in" / "b.jsonl").write_text('{"text": "差评"}\n', encoding="utf-8")
    else:
        pd.DataFrame({"text": ["好吃", "一般"], "n": [big, 7],
                      "at": pd.to_datetime(["2024-05-01 12:00", "2024-05-02 08:30"])}).to_parquet(tmp_path / "in" / "a.parquet")
        pd.DataFrame({"text": ["差评"]}).to_parquet(tmp_path / "in" / "b.parquet")
        assert b"pandas" in pq.read_schema(tmp_path / "in" / "a.parquet").metadata
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, tmp_path / "in", "-o", output,
                   "--output-format", "jsonl", "--model", hf_model_dir, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    lines = [line for path in sorted(output.glob("*.jsonl")) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = {row["text"]: row for row in map(json.loads, lines)}
    assert len(lines) == 3 and sorted(rows) == sorted(["好吃", "一般", "差评"])
    assert rows["好吃"]["n"] == big and type(rows["好吃"]["n"]) is int and f'"n": {big},' in lines[0] + lines[1] + lines[2]
    assert rows["一般"]["n"] == 7 and type(rows["一般"]["n"]) is int and rows["差评"].get("n") is None
    assert all(row["label"] in ("负面", "正面") and row["error"] in (None, "") for row in rows.values())
    if input_format != "jsonl":
        assert rows["好吃"]["at"] == "2024-05-01 12:00:00" and rows["差评"].get("at") is None


def test_an_interrupted_ray_job_removes_the_files_it_wrote(ray_address, hf_model_dir, parquet_dir, tmp_path,
                                                          monkeypatch):
    """A Ray job cannot be resumed: a part of its output would read as a whole, smaller dataset."""
    import structsent.ray as ray_adapter
    import structsent.ray.outputs as ray_outputs
    from structsent.config import EngineConfig

    output = tmp_path / "out"

    def write_some_then_interrupt(ds, out, fmt):
        Path(out).mkdir(exist_ok=True)  # as Ray's writer makes it
        (Path(out) / "part-0.parquet").write_bytes(b"PAR1 written before Ctrl-C")
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_outputs, "write_dataset", write_some_then_interrupt)
    spec = ray_adapter.RayLabelSpec(input=str(parquet_dir), output=str(output), model=str(hf_model_dir),
                                    config=EngineConfig(device="cpu"), ray_address=ray_address, quiet=True)
    with pytest.raises(ray_adapter.RayJobInterrupted, match="files it had written were removed"):
        ray_adapter.run_label_job(spec)
    assert not output.exists() and not Path(ray_outputs.staging_directory(str(output))).exists()
    # --overwrite: what it would replace stays when the job fails
    output.mkdir()
    (output / "earlier.parquet").write_bytes(b"an earlier job's output")
    with pytest.raises(ray_adapter.RayJobInterrupted):
        ray_adapter.run_label_job(dataclasses.replace(spec, overwrite=True))
    assert [p.name for p in output.iterdir()] == ["earlier.parquet"]
    assert not Path(ray_outputs.staging_directory(str(output))).exists()


KILLED_DRIVER = """
import sys, time
from pathlib import Path
import structsent.ray as ray_adapter
import structsent.ray.outputs as ray_outputs
from structsent.config import EngineConfig

source, output, model, marker, address = sys.argv[1:]

def write_then_hang(ds, out, fmt):
    Path(out).mkdir(exist_ok=True)
    (Path(out) / "part-0.parquet").write_bytes(b"PAR1 half of the output")
    Path(marker).touch()
    time.sleep(600)

ray_outputs.write_dataset = write_then_hang
ray_adapter.run_label_job(ray_adapter.RayLabelSpec(input=source, output=output, model=model,
                                                   config=EngineConfig(device="cpu"), ray_address=address, quiet=True))
"""


@pytest.mark.slow
def test_a_ray_job_killed_while_writing_leaves_nothing_under_the_output_name(ray_address, hf_model_dir, parquet_dir,
                                                                             tmp_path):
    """kill -9 of the driver left the files written so far in the output directory, read as a whole,
    smaller dataset (1,000 of 4,000 rows). They are written beside it and renamed into place at the end."""
    import structsent.ray as ray_adapter
    import structsent.ray.outputs as ray_outputs
    from structsent.config import EngineConfig

    output, marker = tmp_path / "out", tmp_path / "writing"
    driver = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(parquet_dir), str(output), str(hf_model_dir),
                               str(marker), ray_address])
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert driver.poll() is None and time.monotonic() < deadline, "the driver did not reach its write"
            time.sleep(0.2)
        assert Path(ray_outputs.staging_directory(str(output)), "part-0.parquet").exists()
    finally:
        driver.kill()
        driver.wait(30)
    assert not output.exists()  # nothing that reads as a dataset
    spec = ray_adapter.RayLabelSpec(input=str(parquet_dir), output=str(output), model=str(hf_model_dir),
                                    config=EngineConfig(device="cpu"), ray_address=ray_address, quiet=True)
    ray_adapter.run_label_job(spec)  # the next run: the killed job's staging directory goes
    assert pq.read_table(output).num_rows == pq.read_table(parquet_dir).num_rows
    assert not Path(ray_outputs.staging_directory(str(output))).exists()


# -- on a real two-node cluster -----------------------------------------------------------------
NODE_START_TIMEOUT_S = 90
FAULT_ROWS, FAULT_FILES, FAULT_CHUNK_ROWS = 1200, 12, 50
WORKER_KILL_ATTEMPTS = 3
LABELLING_TITLE = "DatasetLabeller)).submit"  # an actor's process title while it runs a task


def free_ports(count: int) -> list[int]:
    """Loopback ports free right now (all held at once, so no two are the same)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def session_pids(session: int) -> list[int]:
    """Live processes of the session ``session`` (a node started in its own session keeps every
    process it starts there: GCS, raylet, agents and the raylet's workers, which set their own
    process groups but not their own sessions)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session:
                continue
            with open(f"/proc/{entry}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # a zombie is already dead
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        pids.append(int(entry))
    return pids


def process_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def tail(path: Path) -> str:
    return path.read_bytes().decode(errors="replace")[-3000:]


class RayNode:
    """One node of a real cluster: `ray start --block` in its own session, its own temp dir and ports."""

    def __init__(self, env: dict, temp_dir: Path, *, num_cpus: int, head_port: int | None = None,
                 address: str | None = None) -> None:
        ports = free_ports(7)
        role = ["--head", "--port", str(head_port), "--include-dashboard", "false",
                "--dashboard-port", str(ports[6])] if address is None else ["--address", address]
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *role,
            "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus), "--num-gpus", "0",
            "--temp-dir", str(temp_dir), "--object-store-memory", str(100 * 1024 * 1024),
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--min-worker-port", "0", "--max-worker-port", "0",  # any free port, never a default range
            "--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3]),
            "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
            "--disable-usage-stats",
        ]
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.log = temp_dir / "ray-start.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_started(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if b"Ray runtime started" in self.log.read_bytes():
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        """SIGKILL every process of this node at once, as when its machine dies, and wait until they are gone."""
        for _ in range(50):
            pids = session_pids(self.process.pid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.process.wait(timeout=10)


def wait_for_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture
def two_node_cluster():
    """A head (1 CPU) and a worker node (2 CPUs) on 127.0.0.1, token-authenticated, in a temp dir.

    Three CPUs make the CLI start two one-CPU actors, and the head has room for only one of them,
    so at least one labels on the worker node. The token is passed in the environment of every
    process (so nothing is read from or written to ~/.ray). Yields (address, env, head, worker).
    """
    if not os.path.isdir("/proc"):
        pytest.skip("finding and killing a node's processes reads /proc (Linux)")
    root = Path(tempfile.mkdtemp(prefix="ssray", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               # The head declares a silent node dead after 5 missed health checks: 5 s instead of 15 s.
               RAY_health_check_period_ms="1000")
    port = free_ports(1)[0]
    nodes = []
    try:
        head = RayNode(env, root / "head", num_cpus=1, head_port=port)
        nodes.append(head)
        if not wait_for_port(port, NODE_START_TIMEOUT_S):
            pytest.skip(f"`ray start --head` did not come up within {NODE_START_TIMEOUT_S} s:\n{tail(head.log)}")
        worker_node = RayNode(env, root / "worker", num_cpus=2, address=f"127.0.0.1:{port}")
        nodes.append(worker_node)
        for node in nodes:
            if not node.wait_started(NODE_START_TIMEOUT_S):
                pytest.skip(f"`ray start` did not come up within {NODE_START_TIMEOUT_S} s:\n{tail(node.log)}")
        yield f"127.0.0.1:{port}", env, head, worker_node
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


def wait_for_labelling_on(node: RayNode, job: subprocess.Popen, timeout_s: float) -> str | None:
    """The title of an actor process of ``node`` in the middle of a labelling task, once there is one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None:
        for pid in session_pids(node.process.pid):
            title = process_title(pid)
            if LABELLING_TITLE in title:
                return title
        time.sleep(0.1)
    return None


@pytest.fixture
def fault_job_input(real_reviews, tmp_path):
    """JSONL files of real reviews with ids, and the local engine's labels of the same rows.

    Several files: Ray reads each into its own block, so both actors get tasks (Ray's Parquet
    reader packs small files into one block, hence one task). The local run starts here, before
    the cluster, so the two overlap. Yields (input directory, a function returning the local rows by id).
    """
    rows = [{"id": f"r{i:05d}", "text": real_reviews[i % len(real_reviews)]} for i in range(FAULT_ROWS)]
    directory = tmp_path / "in"
    directory.mkdir()
    per_file = -(-FAULT_ROWS // FAULT_FILES)
    for part in range(FAULT_FILES):
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows[part * per_file:(part + 1) * per_file])
        (directory / f"part-{part}.jsonl").write_text("".join(lines), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "all.parquet")
    local = subprocess.Popen([sys.executable, "-m", "structsent", "label", tmp_path / "all.parquet",
                              "-o", tmp_path / "local.parquet", "--model", "default", "--device", "cpu", "--quiet"],
                             stderr=subprocess.PIPE)

    def local_rows() -> dict[str, dict]:
        _, stderr = local.communicate(timeout=300)
        assert local.returncode == 0, stderr.decode(errors="replace")[-3000:]
        return {row["id"]: row for row in pq.read_table(tmp_path / "local.parquet").to_pylist()}

    try:
        yield directory, local_rows
    finally:
        if local.poll() is None:
            local.kill()
        local.communicate()


def test_worker_node_killed_mid_job_loses_and_duplicates_nothing(fault_job_input, two_node_cluster, tmp_path):
    """SIGKILL a whole worker node (raylet, agents, actors) while one of its actors labels a task:
    Ray restarts the actor and retries the task elsewhere, and the output holds every row once.

    Ray may hand every task to the head node's actor while the worker's is still loading; such a
    run proves nothing, so the job is run again (into a fresh output) until the kill lands mid-task."""
    source, local_rows = fault_job_input
    address, env, _, worker_node = two_node_cluster
    missed = []
    for attempt in range(WORKER_KILL_ATTEMPTS):
        output, log = tmp_path / f"out-{attempt}", tmp_path / f"job-{attempt}.log"
        with open(log, "wb") as stderr:  # a file, not a pipe nobody reads while the job runs
            job = subprocess.Popen([sys.executable, "-m", "structsent", "label", "--engine", "ray", "--ray-address",
                                    address, source, "-o", output, "--chunk-rows", str(FAULT_CHUNK_ROWS),
                                    "--model", "default", "--device", "cpu", "--quiet"],
                                   env=env, stderr=stderr, start_new_session=True)
        try:
            killed_mid_job = False
            if wait_for_labelling_on(worker_node, job, timeout_s=180) is not None:
                worker_node.kill()
                killed_mid_job = job.poll() is None
            job.wait(timeout=300)
            if killed_mid_job:
                break
            seen = sorted({process_title(pid)[:80] for pid in session_pids(worker_node.process.pid)})
            missed.append(f"attempt {attempt}: job exit {job.returncode} before a worker-node actor was killed "
                          f"mid-task (worker processes: {seen})")
            assert worker_node.process.poll() is None, "\n".join(missed)  # a dead node cannot be killed again
        finally:
            if job.poll() is None:
                job.kill()
            job.wait()
    else:
        pytest.fail("the test proved nothing:\n" + "\n".join(missed) + "\n" + tail(log))
    assert job.returncode == 0, tail(log)

    expected = local_rows()
    rows = pq.read_table(output).to_pylist()
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "rows duplicated"
    assert set(ids) == set(expected), "rows lost"  # in no particular order across files (docs/RAY.md)
    for row in rows:
        reference = expected[row["id"]]
        assert (row["text"], row["label"], row["error"]) == (reference["text"], reference["label"], reference["error"])
        assert abs(row["prob_正面"] - reference["prob_正面"]) < TOLERANCE, row["id"]


# -- values, errors and the output directory on the edges -------------------------------------------
def ray_label(ray_address, source, output, *extra, timeout: int = 180):
    return run_cli("--engine", "ray", "--ray-address", ray_address, source, "-o", output, "--model", "default",
                   "--device", "cpu", "--quiet", *extra, timeout=timeout)


def one_line_exit(proc, code: int) -> str:
    """Exit ``code``, and one line saying why (Ray's own timestamped log lines, such as its token
    warning, apart)."""
    message = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, message[-3000:]
    ours = [line for line in message.strip().splitlines() if not re.match(r"\[?\d{4}-\d\d-\d\d ", line)]
    assert "Traceback" not in message and len(ours) == 1 and ours[0].startswith("structsent: error"), message[-3000:]
    return ours[0]


def test_cli_engine_ray_reads_json_lines_values_as_they_are(ray_address, tmp_path):
    """Ray read JSON Lines through pandas: "007" came out as 7, a date as a timestamp, "1e3" as
    1000.0, 1.0000000000000002 as 1.0, and the review "666" as a number, flagged and unlabelled.
    Then through Arrow types: an integer among floats became a float (3 -> 3.0), objects with other
    keys gained them as nulls, and a number among strings became a string."""
    rows = [{"id": "007", "at": "2024-03-05", "code": "1e3", "f": 1.0000000000000002, "text": "666",
             "price": 3, "attrs": {"a": 1}, "x": "5", "big": 2**53 + 1},
            {"id": "008", "at": "n/a", "code": "c", "f": 0.5, "text": "好吃",
             "price": 3.5, "attrs": {"b": [1, None]}, "x": 5, "big": 0.5}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                             encoding="utf-8")
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out", "--output-format", "jsonl")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    written = sorted((json.loads(line) for path in (tmp_path / "out").glob("*.jsonl")
                      for line in path.read_text(encoding="utf-8").splitlines()), key=lambda r: r["id"])
    assert [{k: r[k] for k in rows[0]} for r in written] == rows
    assert all(r["error"] is None and r["label"] in ("负面", "正面") for r in written)


@pytest.mark.parametrize("line, says", [('{"id": "a", "text": "好", "id": "b"}', "the key 'id' appears more than once"),
                                        ('{"text": "\\ud800差"}', "field 'text' holds a lone UTF-16 surrogate escape"),
                                        ('{"text": "好", "x": 1e400}', "the number 1e400 cannot be held exactly"),
                                        ('{"text": "好", "x": NaN}', "NaN is not a JSON number")])
def test_json_lines_files_are_read_as_the_local_engine_reads_them(line, says):
    """Ray's reader kept the last value of a key given twice, dropped a lone surrogate escape from the
    text, and read 1e400 as infinity: labelled, exit 0."""
    from structsent.ray.inputs import json_lines_table

    table = json_lines_table('{"text": "好吃", "n": 7}\n\n{"text": "差", "n": null}\n'.encode(), "a.jsonl")
    assert table.to_pylist() == [{"text": "好吃", "n": 7}, {"text": "差", "n": None}]
    with pytest.raises(BadInputError, match="a.jsonl: line 2: " + re.escape(says) + ".*--engine local --on-bad-row flag"):
        json_lines_table(('{"text": "好吃"}\n' + line + "\n").encode(), "a.jsonl")


def test_json_lines_values_no_one_parquet_type_holds_are_refused_for_parquet_output():
    """For Parquet output a column of a number and an object became a column of their JSON text (and
    the doubles of the other files, which agreed, text too), exit 0; the local job refuses them."""
    from structsent.ray.inputs import json_lines_table

    data = '{"text": "好吃", "n": 7}\n{"text": "差", "n": {"a": 1}}\n'.encode()
    with pytest.raises(BadInputError, match=r"^y.jsonl: column 'n' holds values no one Parquet type holds \(integer, "
                                            r"object: .*\); write CSV or JSON Lines output"):
        json_lines_table(data, "y.jsonl", exact=False)
    assert json_lines_table(data, "y.jsonl").column("n").to_pylist() == [7, {"a": 1}]  # other outputs: as they are
    # the text column's non-texts are flagged rows, written as their JSON text: never refused
    assert json_lines_table(data, "y.jsonl", exact=False, text_column="n").column("n").to_pylist() == [7, {"a": 1}]
    numbers = json_lines_table('{"text": "好吃", "n": 1.5}\n{"text": "差", "n": 2.25}\n'.encode(), "x.jsonl", exact=False)
    assert str(numbers.schema.field("n").type) == "double" and numbers.column("n").to_pylist() == [1.5, 2.25]


def test_cli_engine_ray_refuses_a_bad_json_lines_row_in_one_line_and_writes_nothing(ray_address, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "好吃"}\n{"id": "a", "text": "好", "id": "b"}\n', encoding="utf-8")
    message = one_line_exit(ray_label(ray_address, tmp_path / "in", tmp_path / "out"), 2)
    assert "a.jsonl: line 2: the key 'id' appears more than once" in message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").glob("*")) == []


def test_cli_engine_ray_removes_the_files_of_a_job_that_fails_part_way(ray_address, tmp_path):
    """Exit 2 left 250-500 of 1,050 rows in the output, which then read as a whole, smaller dataset."""
    (tmp_path / "in").mkdir()
    for part in range(4):
        (tmp_path / "in" / f"p{part}.jsonl").write_text(
            "".join(json.dumps({"rid": f"{part}-{i}", "text": "味道不错" if i % 2 else "差评"}, ensure_ascii=False) + "\n"
                    for i in range(250)), encoding="utf-8")
    (tmp_path / "in" / "z.jsonl").write_text("".join('{"rid": "z%d", "text": "好", "score": 1}\n' % i
                                                     for i in range(50)), encoding="utf-8")
    message = one_line_exit(ray_label(ray_address, tmp_path / "in", tmp_path / "out", "--chunk-rows", "50"), 2)
    assert "score" in message and "--prefix" in message
    assert list((tmp_path / "out").glob("*")) == []


@pytest.mark.parametrize("mistake", [["--ray-address", "127.0.0.1:1"], ["--model", "/no/such/model"]])
def test_cli_engine_ray_overwrite_keeps_the_previous_output_when_the_job_cannot_start(ray_address, tmp_path, mistake):
    """--overwrite emptied the output directory before the model or the address was checked."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,text\n1,好吃\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.parquet").write_bytes(b"the previous results")
    args = ["--engine", "ray", "--ray-address", ray_address, tmp_path / "in", "-o", tmp_path / "out", "--model",
            "default", "--device", "cpu", "--quiet", "--overwrite"]
    args[args.index(mistake[0]) + 1] = mistake[1]
    proc = run_cli(*args)
    assert proc.returncode in (2, 3), proc.stderr.decode(errors="replace")[-3000:]
    assert (tmp_path / "out" / "previous.parquet").read_bytes() == b"the previous results"


def test_a_malformed_ray_address_is_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,text\n1,好吃\n", encoding="utf-8")
    message = one_line_exit(ray_label("bogus", tmp_path / "in", tmp_path / "out"), 2)
    assert "--ray-address bogus" in message


def test_csv_output_of_a_binary_column_holds_its_text_and_refuses_bytes_that_are_not_text(ray_address, tmp_path):
    """Arrow's CSV writer failed on them, exit 1: "the Ray job failed: pyarrow.lib.ArrowInvalid: Invalid
    UTF8 payload". The local job's one line now, exit 2 (and a BINARY column of text is written as text)."""
    from structsent.ray.outputs import binary_columns_as_text

    block = pa.table({"id": [1], "note": pa.array(["好".encode()], pa.binary())})
    assert binary_columns_as_text(block).column("note").to_pylist() == ["好"]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["好吃", "难吃"], "note": pa.array([b"ok", b"\xff\xfe"], pa.binary())}),
                   tmp_path / "in" / "a.parquet")
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out", "--output-format", "csv")
    assert one_line_exit(proc, 2) == ("structsent: error: a BINARY column holds bytes that are not UTF-8 text, which CSV, "
                                      "TSV and JSON Lines cannot hold unchanged; write Parquet output (-o OUT.parquet)")


def test_cli_engine_ray_labels_a_binary_text_column_and_multi_line_csv_of_several_mb(ray_address, tmp_path):
    """A Parquet BINARY text column (Hive, older Spark) was flagged "not a string (got bytes)" row by
    row; a CSV of a few MB whose quoted reviews hold line breaks was refused (Arrow's parser assumed none)."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": pa.array(["好吃".encode(), "难吃".encode()], pa.binary())}),
                   tmp_path / "in" / "a.parquet")
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    table = pq.read_table(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == [1, 2] and table.column("error").null_count == 2
    (tmp_path / "csv").mkdir()
    with open(tmp_path / "csv" / "a.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, "第一段\n" + "\n" * 2100 + f"第二段{i}"] for i in range(2500))  # cheap to label
    assert (tmp_path / "csv" / "a.csv").stat().st_size > 5_000_000
    proc = ray_label(ray_address, tmp_path / "csv", tmp_path / "csv-out", timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    ids = pq.read_table(tmp_path / "csv-out", columns=["id"]).column("id").to_pylist()
    assert sorted(map(int, ids)) == list(range(2500))


def test_cli_engine_ray_on_a_cluster_of_one_cpu_finishes(tmp_path):
    """The one actor reserved the only CPU, the read task never ran, and the job waited for ever."""
    if not os.path.isdir("/proc"):
        pytest.skip("killing a node's processes reads /proc (Linux)")
    root = Path(tempfile.mkdtemp(prefix="ssray1", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    port = free_ports(1)[0]
    head = RayNode(env, root / "head", num_cpus=1, head_port=port)
    try:
        if not (wait_for_port(port, NODE_START_TIMEOUT_S) and head.wait_started(NODE_START_TIMEOUT_S)):
            pytest.skip(f"`ray start --head` did not come up within {NODE_START_TIMEOUT_S} s:\n{tail(head.log)}")
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "a.csv").write_text("id,text\n1,好吃\n2,难吃\n", encoding="utf-8")
        proc = run_structsent("label", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", tmp_path / "in",
                              "-o", tmp_path / "out", "--model", "default", "--device", "cpu", "--quiet",
                              timeout=240, env=env)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        assert sorted(pq.read_table(tmp_path / "out").column("id").to_pylist()) == ["1", "2"]
    finally:
        head.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_input_files_that_disagree_on_a_column_s_type_are_said_so_in_one_line(ray_address, tmp_path):
    """Ray's own words: "ArrowConversionError: Error converting data to Arrow: Failed to unify
    schemas: Unable to merge: Field id has incompatible types: int64 vs string"."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.jsonl").write_text('{"id": 1, "text": "好吃"}\n', encoding="utf-8")
    (source / "b.jsonl").write_text('{"id": "x2", "text": "难吃"}\n', encoding="utf-8")
    proc = ray_label(ray_address, source, tmp_path / "out", "--output-format", "jsonl")
    said = one_line_exit(proc, 2)  # a bad input, as docs/RAY.md says (it was exit 1)
    assert re.search(r"the input holds column 'id' as (int64|string) in some files and (string|int64) in others, and "
                     r"a Ray dataset has one type per column; make the files agree, or label them with --engine local",
                     said), said
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_failed_ray_job_is_told_by_the_error_raised_not_by_ray_s_wrappers():
    """The innermost error of a failed read was Ray's "SystemException": the line said nothing."""
    from structsent.ray.failures import _last_line

    remote = ValueError("Failed to read CSV file: a.csv\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                        "pyarrow.lib.ArrowInvalid: CSV parse error: Expected 2 columns, got 1: 第二段984\n"
                        "Failed to read stream iteratively after 1/10 attempts (total backoff 0.0s).")
    remote.__cause__ = RuntimeError("SystemException")
    assert _last_line(remote) == "pyarrow.lib.ArrowInvalid: CSV parse error: Expected 2 columns, got 1: 第二段984"
    assert _last_line(RuntimeError("SystemException")) == "SystemException"


def test_ray_reads_the_files_of_a_directory_that_were_checked_and_only_those(ray_address, tmp_path):
    """The directory went to Ray whole, and Ray listed it by rules of its own: it read sub/_b.csv,
    which the checks here skip (so its zip "007" was typed a number, 7), and skipped .hid/c.csv,
    whose row was then missing from the output, exit 0. Names beginning with "." or "_" (files and
    directories: _SUCCESS, _temporary/, .staging/) are not data, at any depth."""
    source = tmp_path / "in"
    for name, body in [("a.csv", "id,text,zip\n1,好吃,001\n"), ("sub/d.csv", "id,text,zip\n2,难吃,007\n"),
                       ("sub/_b.csv", "id,text,zip\n3,还行,009\n"), (".hid/c.csv", "id,text,zip\n4,不错,010\n"),
                       ("_temporary/e.csv", "id,text,zip\n5,差,011\n")]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(body, encoding="utf-8")
    listed = resolve_input(str(source))
    assert listed.paths == listed.files == [str(source / "a.csv"), str(source / "sub" / "d.csv")]
    output = tmp_path / "out"
    proc = ray_label(ray_address, source, output, "--output-format", "jsonl")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    rows = sorted((json.loads(line) for path in output.iterdir() for line in path.read_text("utf-8").splitlines()),
                  key=lambda row: row["id"])
    assert [(row["id"], row["zip"]) for row in rows] == [("1", "001"), ("2", "007")]


def test_cli_engine_ray_reads_and_writes_directories_whose_names_hold_uri_characters(ray_address, tmp_path):
    """Ray took a local path for a URI: a directory named "in?" had "no input files" ("?" starts a
    query), and the output could not be written there either."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "b?.csv").write_text("text\n好\n", encoding="utf-8")  # Ray's listing would skip it: not ".csv" before "?"
    assert resolve_input(str(plain)).paths == [str(plain / "b?.csv")] and resolve_input(str(plain)).suffixes is None
    source = tmp_path / "in?#[1]"
    source.mkdir()
    (source / "a?.jsonl").write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                            for i, t in enumerate(["好吃", "难吃", "还行"])), encoding="utf-8")
    for fmt in ("parquet", "jsonl"):
        output = tmp_path / f"out?{fmt}"
        proc = ray_label(ray_address, source, output, "--output-format", fmt)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        if fmt == "parquet":
            rows = pq.read_table(output).to_pylist()
        else:
            rows = [json.loads(line) for path in sorted(output.iterdir()) for line in path.read_text("utf-8").splitlines()]
        assert sorted(row["id"] for row in rows) == [0, 1, 2] and all(row["label"] for row in rows)


@pytest.mark.parametrize("name, content", [("a.jsonl", ""), ("a.jsonl", "\n\n"), ("a.csv", "id,text\n")])
def test_cli_engine_ray_on_an_input_of_no_rows_leaves_an_empty_output_as_the_local_job_does(ray_address, tmp_path,
                                                                                             name, content):
    """Ray keeps no columns for an input of no rows: a header-only CSV and an empty JSON Lines file
    were "no column 'text'; columns are: ." (exit 2), where the local job writes an empty output."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_text(content, encoding="utf-8")
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir()) == []
    local = run_cli(tmp_path / "in" / name, "-o", tmp_path / "local.jsonl", "--model", "default", "--quiet")
    assert local.returncode == 0 and (tmp_path / "local.jsonl").read_bytes() == b""


@pytest.mark.parametrize("flags, says", [(["--text-column", "review"], "no column 'review'"),
                                         (["--id-column", "rid"], "no column 'rid' for --id-column")])
def test_cli_engine_ray_checks_the_columns_of_a_csv_of_no_rows_as_the_local_job_does(ray_address, tmp_path, flags,
                                                                                    says):
    """Ray keeps no columns for a header-only CSV: a misspelt column passed, exit 0."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,text\n", encoding="utf-8")
    assert says in one_line_exit(ray_label(ray_address, tmp_path / "in", tmp_path / "out", *flags), 2)


def test_cli_engine_ray_on_a_parquet_file_of_no_rows_makes_its_output_directory(ray_address, tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "in" / "a.parquet")
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("options", "message"), [
    (dict(concurrency=(2, 1)), r"concurrency=\(2, 1\): expected .* min <= max"),  # was Ray's bare ValueError
    (dict(concurrency=True), r"concurrency=True"),  # was a pool of one actor
    (dict(concurrency=(1, 2, 3)), r"concurrency=\(1, 2, 3\)"),
    (dict(keep_columns="id"), r"keep_columns='id': expected a list of column names, e.g. \['id'\]"),  # was 'i', 'd'
    # failed inside the actors (Arrow's "exists 2 times in schema", retried, 80 lines of tracebacks)
    (dict(keep_columns=iter(["id", "text", "id"])), r"keep_columns=\['id', 'text', 'id'\]: 'id' is named twice"),
    (dict(num_gpus=0.5, batch_size=None), r"batch_size=None \(whole blocks\) with num_gpus"),  # was Ray's ValueError
])
def test_pool_options_that_cannot_work_are_refused_naming_the_option(options, message):
    from structsent.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        label_dataset(None, **options)  # checked before the dataset is touched


def test_numpy_integers_are_pool_sizes_as_engine_options_accept_them():
    import numpy as np

    from structsent.ray.labeller import _pool_options

    assert _pool_options(np.int64(2), np.int64(8), ("id",)) == (2, 8, ["id"])
    assert _pool_options((np.int32(1), 3), None, None) == ((1, 3), None, None)


def test_a_text_column_of_numbers_in_some_batches_is_text_in_every_batch(ray_address, hf_model_dir):
    """A number among the texts, each row its own block: label_dataset raised pyarrow's ArrowTypeError
    (string vs int64) on a fresh Dataset, and reading the result failed on one run already ("Failed
    to unify schemas"). Non-texts are flagged rows; the text column is text in every batch."""
    items = [{"id": 0, "text": "好吃"}, {"id": 1, "text": 5}, {"id": 2, "text": 2.5}, {"id": 3, "text": None},
             {"id": 4, "text": "差评"}]
    for ds in (ray.data.from_items(items, override_num_blocks=5), ray.data.from_items(items, override_num_blocks=5).materialize()):
        rows = sorted(label_dataset(ds, model=hf_model_dir, num_cpus=0.5, batch_size=1).take_all(), key=lambda r: r["id"])
        assert [row["id"] for row in rows] == [0, 1, 2, 3, 4]
        assert [row["text"] for row in rows] == ["好吃", "5", "2.5", None, "差评"]
        assert [row["error"] is None for row in rows] == [True, False, False, False, True]
        assert rows[0]["label"] is not None and rows[1]["label"] is None


SIGTERM_AFTER_INIT = """
import os, signal, sys, time
from structsent.cli.signals import Terminated, sigterm_as_interrupt
from structsent.ray.cluster import connected

with sigterm_as_interrupt():
    with connected(sys.argv[1], quiet=True):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler ends the sleep
        except Terminated:
            print("terminated as Ctrl-C is")
"""


def test_sigterm_after_ray_init_stops_the_command_as_ctrl_c_does(ray_address):
    """Ray's core worker replaced the command's SIGTERM handler with one that dumps a native stack and
    aborts (exit 134, nothing removed); the command's own handler is kept."""
    proc = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_INIT, ray_address], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0 and "terminated as Ctrl-C is" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_the_output_directory_is_swapped_safely(tmp_path, monkeypatch):
    """The old output comes back if the new one cannot be put in place, and after a kill between the
    two renames; a mount point or another file system is written in place (a rename there fails)."""
    import structsent.ray.outputs as ray_outputs

    output, new = tmp_path / "out", tmp_path / "new"
    output.mkdir()
    (output / "old.parquet").write_bytes(b"old")
    new.mkdir()
    (new / "new.parquet").write_bytes(b"new")
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(ray_outputs.os, "replace", second_fails)
    with pytest.raises(OSError):
        ray_outputs._replace_directory(str(new), str(output))
    monkeypatch.setattr(ray_outputs.os, "replace", real_replace)
    assert [p.name for p in output.iterdir()] == ["old.parquet"]

    aside = Path(ray_outputs.staging_directory(str(output)) + "-old")
    os.replace(output, aside)  # as a kill between the two renames leaves it
    ray_outputs._finish_an_interrupted_swap(str(output))
    assert [p.name for p in output.iterdir()] == ["old.parquet"] and not aside.exists()

    newer = tmp_path / "newer"
    newer.mkdir(mode=0o700)
    (newer / "new.parquet").write_bytes(b"new")
    output.chmod(0o2770)  # a shared output directory: group-writable, setgid
    ray_outputs._replace_directory(str(newer), str(output))
    assert [p.name for p in output.iterdir()] == ["new.parquet"] and not aside.exists()
    assert stat.S_IMODE(output.stat().st_mode) == 0o2770  # the replaced directory's, not the umask's

    assert ray_outputs.room_beside(str(output)) and ray_outputs.room_beside(str(tmp_path / "absent"))
    monkeypatch.setattr(ray_outputs.os.path, "ismount", lambda path: path == str(output))
    assert not ray_outputs.room_beside(str(output))


@pytest.mark.parametrize("name, data, says", [
    ("short.csv", "id,text\n1,好吃\n2\n".encode(), r"short.csv: line 3: expected 2 fields, got 1"),
    ("long.csv", "id,text\n1,好吃\n2,难吃,多\n".encode(), r"long.csv: line 3: expected 2 fields, got 3"),
    ("latin.csv", b"id,text\n1,\xe9\xe5\xa5\xbd\n", r"latin.csv: invalid UTF-8 at line 2, byte offset 10 \(byte 0xe9\)"),
    ("twice.csv", "text,text\n好吃,难吃\n".encode(), r"twice.csv: column name\(s\) 'text' appear more than once"),
])
def test_a_csv_file_arrow_cannot_read_is_a_bad_input_in_the_local_reader_s_words(ray_address, tmp_path, name, data,
                                                                                 says):
    """Ray said "Failed to read CSV file: ... Please check the CSV file has correct format, or filter out
    non-CSV file with 'partition_filter' field" (Arrow's reason dropped), or "KeyError: 'Field "text"
    exists 2 times in schema'", exit 1; the local engine says which row and why, exit 2."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("id,text\n7,不错\n", encoding="utf-8")
    (source / name).write_bytes(data)
    said = one_line_exit(ray_label(ray_address, source, tmp_path / "out"), 2)
    assert re.search(says, said) and "partition_filter" not in said, said
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_file_that_is_not_parquet_among_parquet_inputs_is_a_bad_input_naming_it(ray_address, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table({"id": [1], "text": ["好吃"]}), source / "a.parquet")
    (source / "b.parquet").write_text("not parquet\n", encoding="utf-8")
    said = one_line_exit(ray_label(ray_address, source, tmp_path / "out"), 2)  # was exit 1, naming no file
    assert re.search(r"b\.parquet: not a Parquet file, or a damaged one \(.*magic bytes", said), said


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "parquet"])
def test_a_json_lines_file_of_numbers_in_the_text_column_beside_one_of_texts_is_flagged_not_refused(
        ray_address, tmp_path, output_format):
    """A file whose text values were all numbers made the column int64, a file of texts made it a
    string, and the job was refused as files disagreeing on a column's type (exit 2); in one file the
    same rows were flagged and labelled, as docs/RAY.md says."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.jsonl").write_text('{"id": 1, "text": 5}\n{"id": 2, "text": 6}\n', encoding="utf-8")
    (source / "b.jsonl").write_text('{"id": 3, "text": "好吃"}\n{"id": 4, "text": "太难吃了"}\n', encoding="utf-8")
    proc = ray_label(ray_address, source, tmp_path / "out", "--output-format", output_format)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    files = sorted((tmp_path / "out").iterdir())
    if output_format == "parquet":
        rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    elif output_format == "csv":
        rows = [row for path in files for row in csv.DictReader(path.open(encoding="utf-8"))]
    else:
        rows = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
    by_id = {int(row["id"]): row for row in rows}
    assert sorted(by_id) == [1, 2, 3, 4] and len(rows) == 4
    assert all("not a string (got int)" in by_id[i]["error"] and not by_id[i]["label"] for i in (1, 2))
    assert (by_id[3]["label"], by_id[4]["label"]) == ("正面", "负面") and not by_id[3]["error"]


def test_label_dataset_refuses_a_missing_or_broken_model_on_the_driver(ray_address, tmp_path):
    """An actor that could not load its model reached the driver as Ray's ActorDiedError (26 lines,
    the reason inside), after remote tracebacks retried for ever."""
    from structsent.errors import ModelFormatError, ModelNotFoundError

    ds = ray.data.from_items([{"text": "好吃"}])
    with pytest.raises(ModelNotFoundError):
        label_dataset(ds, model=str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises((ModelNotFoundError, ModelFormatError)):
        label_dataset(ds, model=tmp_path / "empty")
    label_dataset(ds, model=tmp_path / "empty", check_model=False)  # (lazy: the actors would find out)


@pytest.mark.parametrize("option", [{"num_cpus": -1}, {"num_gpus": -0.5}, {"num_cpus": float("nan")},
                                    {"num_cpus": "1"}, {"num_gpus": True}])
def test_a_reservation_that_is_not_a_number_of_at_least_zero_is_refused(option):
    """num_cpus=-1 passed, and failed only once the result was used, in Ray's words."""
    from structsent.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{next(iter(option))}=.*expected a number >= 0"):
        label_dataset(None, **option)  # checked before the dataset is touched


def test_cli_engine_ray_reports_an_input_of_no_rows_as_the_local_job_does(ray_address, tmp_path):
    """`--engine ray --report` on an input of no rows wrote its empty directory, then exited 2 ("no
    labelled files"), where the local job reports 0 rows: the model's labels make an empty page."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,text\n", encoding="utf-8")
    report = tmp_path / "r.html"
    proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out", "--report", report)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert list((tmp_path / "out").iterdir()) == []
    page = report.read_text(encoding="utf-8")
    assert '<dd id="total-rows">0</dd>' in page and "no files: the job labelled no rows" in page
    local = run_cli(tmp_path / "in" / "a.csv", "-o", tmp_path / "local.csv", "--quiet", "--report",
                    tmp_path / "local.html")
    assert local.returncode == 0 and '<dd id="total-rows">0</dd>' in (tmp_path / "local.html").read_text("utf-8")



@pytest.mark.parametrize("name, content", [("a.csv", "id,text\n"), ("a.jsonl", "")])
def test_cli_engine_ray_refuses_a_report_by_column_an_output_of_no_rows_would_not_have(ray_address, tmp_path, name,
                                                                                      content):
    """On an input of no rows, `--report-by rating` made a page with an empty "By rating" section,
    where the local job refuses a column its output will not have; a column it has is grouped by."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_text(content, encoding="utf-8")
    says = one_line_exit(ray_label(ray_address, tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.html",
                                   "--report-by", "rating"), 2)
    assert "is written (no rows), but not the report: --report-by rating:" in says
    assert not (tmp_path / "r.html").exists()
    if name.endswith(".csv"):
        proc = ray_label(ray_address, tmp_path / "in", tmp_path / "out2", "--report", tmp_path / "r2.html",
                         "--report-by", "id")
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        assert '<dd id="total-rows">0</dd>' in (tmp_path / "r2.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("files, says", [
    ({"a.csv": "id;text\n01;很好\n"}, "a.csv: the header is one column holding semicolons: not CSV; save it with "
     "commas (or with tabs, and label it with --engine local --format tsv)"),
    # (it said "pass --format tsv", which --engine ray then refused: it reads no TSV)
    ({"a.csv": "id\ttext\n01\t很好\n"}, "a.csv: the header is one column holding tabs: not CSV; label it with "
     "--engine local --format tsv, or save it with commas"),
    ({"a.csv": "sep=;\nid;text\n01;好吃\n"}, "a.csv: line 1 is 'sep=;', Excel's delimiter hint, not a header"),
    ({"a.csv": "id,text\n1,好吃\n", "b.csv": "id,review\n2,难吃\n"},
     "b.csv: no column 'text'; columns are: 'id', 'review'. Pass --text-column NAME"),
    ({"a.csv": "id,text\n1,好吃\n", "b.csv": "id;text\n2;难吃\n"}, "b.csv: the header is one column holding semicolons"),
    ({"a.csv": "id,text\n1,好吃\n", "b.csv": "review\n难吃\n"},
     "b.csv: its texts are in column 'review' (its only column), "),
    ({"a.csv": "review\n好吃\n", "b.csv": "text,id\n难吃,1\n"}, "b.csv: its texts are in column 'text', "),
    ({"a.csv": "\ntext,id\n好,007\n"}, "a.csv: no header row (line 1 is empty)"),  # ("007" became 7, exit 0)
    ({"a.csv": "\ufeff\n"}, "a.csv: no header row (line 1 is empty)"),
])
def test_csv_headers_are_checked_as_the_local_engine_checks_them_before_ray_starts(tmp_path, files, says):
    """Ray labelled a semicolon-separated .csv (or Excel's sep= line) as whole lines of noise, and
    flagged every row of a file without the text column "missing text (None)": exit 0 both."""
    from structsent.ray.inputs import check_input_columns, resolve_input

    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(BadInputError, match=re.escape(says)):
        check_input_columns(resolve_input(str(tmp_path)), "text")


def test_csv_and_parquet_files_the_local_engine_reads_pass_the_column_checks(tmp_path):
    from structsent.ray.inputs import check_input_columns, resolve_input

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "a.csv").write_text("id,text\n1,好吃\n", encoding="utf-8")
    (tmp_path / "csv" / "b.csv").write_text("text,stars\n难吃,1\n", encoding="utf-8")
    assert check_input_columns(resolve_input(str(tmp_path / "csv")), "text") == "text"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.csv").write_text("id;text\n01;很好\n", encoding="utf-8")  # one column so named
    assert check_input_columns(resolve_input(str(tmp_path / "one")), "id;text") == "id;text"
    assert check_input_columns(resolve_input(str(tmp_path / "one" / "a.csv")), "id;text") == "id;text"
    # a file of one column: its texts are in it, whatever its name (the job says line 1 is read as that name)
    (tmp_path / "bare.csv").write_text("这家店很好吃\n太难吃了\n", encoding="utf-8")
    assert check_input_columns(resolve_input(str(tmp_path / "bare.csv")), "text") == "这家店很好吃"
    pq.write_table(pa.table({"id": ["1"], "text": ["好吃"]}), tmp_path / "good.parquet")
    assert check_input_columns(resolve_input(str(tmp_path / "good.parquet")), "text") is None


def test_a_parquet_column_named_twice_is_refused_before_ray_starts(tmp_path):
    """It failed inside Ray: "the Ray job failed: pyarrow.lib.ArrowInvalid: Multiple matches for
    FieldRef.Name(id)", exit 1; the local engine refuses it in one line, exit 2."""
    from structsent.ray.inputs import check_input_columns, resolve_input

    table = pa.Table.from_arrays([pa.array(["1"]), pa.array(["好吃"]), pa.array(["2"])], names=["id", "text", "id"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(BadInputError, match=r"dup\.parquet: column name\(s\) 'id' appear more than once"):
        check_input_columns(resolve_input(str(tmp_path / "dup.parquet")), "text")


def test_a_json_lines_line_without_the_text_field_is_refused_as_the_local_engine_refuses_it():
    """It became a flagged row, "missing text (None)", with a text field the line never had, exit 0."""
    from structsent.ray.inputs import json_lines_table

    data = '{"id": 1, "text": "好吃"}\n{"id": 2, "text": null}\n{"id": 3}\n'.encode()
    with pytest.raises(BadInputError, match=r"^a\.jsonl: line 3: no 'text' field \(fields: 'id'\); pass --text-column"):
        json_lines_table(data, "a.jsonl")
    assert json_lines_table(data, "a.jsonl", text_column="id").column("id").to_pylist() == [1, 2, 3]


def test_cli_engine_ray_refuses_a_semicolon_separated_csv_in_one_line_and_writes_nothing(ray_address, tmp_path):
    (tmp_path / "semi.csv").write_text("id;text\n01;很好\n02;很差\n", encoding="utf-8")
    message = one_line_exit(ray_label(ray_address, tmp_path / "semi.csv", tmp_path / "out"), 2)
    assert "semi.csv: the header is one column holding semicolons: not CSV" in message
    assert not (tmp_path / "out").exists()


def test_cli_engine_ray_without_quiet_says_a_refused_row_in_one_line_without_ray_s_tracebacks(ray_address, tmp_path):
    """Ray's progress stays on the terminal, but its failure records printed three tracebacks of the
    task before the command's one line."""
    (tmp_path / "miss.jsonl").write_text('{"text": "好", "id": 1}\n{"id": 2}\n', encoding="utf-8")
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, tmp_path / "miss.jsonl", "-o", tmp_path / "out",
                   "--model", "default", "--device", "cpu", timeout=180)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("structsent: error: ") and "line 2: no 'text' field" in err


@pytest.mark.parametrize(("flag", "variable", "here"), [(None, None, True), (None, "", True),
                                                        (None, "ray://10.255.255.1:10001", False),
                                                        ("10.0.0.1:6379", None, False)])
def test_settings_are_checked_on_the_driver_only_for_a_cluster_the_job_starts(monkeypatch, flag, variable, here):
    """With RAY_ADDRESS naming a cluster (whose actors may have GPUs this driver lacks), --device cuda was
    refused on the driver: 'CUDA is not available'."""
    from structsent.ray.job import RayLabelSpec, _starts_its_own_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if variable is not None:
        monkeypatch.setenv("RAY_ADDRESS", variable)
    assert _starts_its_own_cluster(RayLabelSpec(input="in.csv", output="out", ray_address=flag)) is here
