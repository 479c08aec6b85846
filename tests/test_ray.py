"""The Ray Data adapter on a real local Ray: same results as the local engine, exactly once, even
when an actor dies mid-job; and `structsent label --engine ray` through the real command line."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import structsent  # noqa: E402
from structsent.errors import BadInputError, MissingExtraError  # noqa: E402
from structsent.io.formats import Format  # noqa: E402
from structsent.jobs.label import LabelJob, LabelJobSpec  # noqa: E402
from structsent.ray import label_dataset, resolve_input  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5
PREDICTIONS = ["label", "score", "prob_负面", "prob_正面", "error"]
BAD_TEXTS = [None, "", "   "]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address():
    """A real local Ray, small: two CPUs, a 200 MB object store, loopback only."""
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


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
def local_rows(tmp_path_factory, hf_model_dir, reviews_table) -> dict[str, dict]:
    """The local engine's `structsent label` output for the same rows, by id."""
    directory = tmp_path_factory.mktemp("local")
    source, output = directory / "in.parquet", directory / "out.parquet"
    pq.write_table(reviews_table, source)
    spec = LabelJobSpec(input=str(source), output=str(output), input_format=Format.PARQUET,
                        output_format=Format.PARQUET)
    LabelJob(spec, structsent.load(hf_model_dir, device="cpu")).run()
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
    return subprocess.run([sys.executable, "-m", "structsent", "label", *map(str, args)],
                          capture_output=True, timeout=timeout)


# -- without Ray running ------------------------------------------------------------------------
def test_missing_ray_names_the_extra(monkeypatch):
    from structsent.ray import _ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'structsent\[ray\]'"):
        _ray()


def test_resolve_input_takes_a_file_a_directory_or_a_glob(tmp_path, parquet_dir):
    parts = sorted(str(p) for p in parquet_dir.glob("part-*.parquet"))
    directory = resolve_input(str(parquet_dir))
    assert directory.paths == [str(parquet_dir)] and directory.files == parts  # _SUCCESS skipped
    assert directory.suffixes == ["parquet", "pq"]
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
    (["--output-format", "tsv"], 2, b"writes Parquet, CSV or JSONL"),
    (["--model", "/nonexistent/model"], 3, b"no such model directory"),
])
def test_cli_rejects_bad_runs_before_starting_ray(tmp_path, parquet_dir, flags, code, message):
    proc = run_cli("--engine", "ray", parquet_dir, "-o", tmp_path / "out", *flags)
    assert proc.returncode == code
    assert message in proc.stderr


def test_cli_fails_fast_on_an_unreachable_cluster(tmp_path, parquet_dir):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_cli("--engine", "ray", "--ray-address", f"127.0.0.1:{port}", parquet_dir, "-o", tmp_path / "out",
                   timeout=60)
    assert proc.returncode == 2
    assert b"cannot reach the Ray cluster" in proc.stderr


# -- on a real local Ray ------------------------------------------------------------------------
def test_label_dataset_matches_the_local_engine(ray_address, hf_model_dir, parquet_dir, local_rows):
    ds = ray.data.read_parquet(str(parquet_dir))
    labelled = label_dataset(ds, model=hf_model_dir, concurrency=2, num_cpus=0.5, batch_size=100)
    rows = labelled.take_all()
    assert list(rows[0]) == ["id", "text", "stars", *PREDICTIONS]
    assert_same_as_local(rows, local_rows)
    assert sum(1 for row in rows if row["error"] is not None) == len(BAD_TEXTS) * 3


def test_bad_columns_fail_on_the_driver(ray_address, hf_model_dir, parquet_dir, tmp_path):
    with pytest.raises(BadInputError, match="no column 'review'"):
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
    output = tmp_path / "out"
    proc = run_cli("--engine", "ray", "--ray-address", ray_address, parquet_dir, "-o", output,
                   "--model", hf_model_dir, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    table = pq.read_table(output)
    assert table.column_names == ["id", "text", "stars", *PREDICTIONS]
    assert_same_as_local(table.to_pylist(), local_rows)


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
