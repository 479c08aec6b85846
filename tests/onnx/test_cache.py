"""The export cache: a damaged entry is discarded and exported again, once, with a warning."""

import logging
import os
import re

import pytest

import structsent
from structsent.models import load_checkpoint
from structsent.onnx.cache import cached_export, entry_problem
from structsent.onnx.export import ExportOptions

pytest.importorskip("onnxruntime")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "cache"))  # read at call time
    return tmp_path / "cache"


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_damaged_entry_is_exported_again_with_a_warning(cache, hf_model_dir, caplog, damage):
    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    graph = entry / "model.onnx"
    intact = graph.read_bytes()
    if damage == "truncated":
        graph.write_bytes(intact[: len(intact) // 2])
    else:
        graph.unlink()
    with caplog.at_level(logging.WARNING, logger="structsent.onnx"):
        assert cached_export(checkpoint, options) == entry
    assert entry_problem(entry) is None and graph.stat().st_size == len(intact)  # whole again
    assert any("is unusable" in r.getMessage() and str(entry) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("in_its_place", ["a file", "a link to a directory", "a dangling link"])
def test_a_file_or_link_in_an_entrys_place_is_removed_and_the_model_exported_there(cache, hf_model_dir, tmp_path,
                                                                                   in_its_place):
    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    intact = (entry / "model.onnx").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the cache's")
    for path in entry.iterdir():
        path.unlink()
    entry.rmdir()
    if in_its_place == "a file":
        entry.write_text("not an export")
    elif in_its_place == "a link to a directory":
        entry.symlink_to(elsewhere, target_is_directory=True)
    else:
        entry.symlink_to(tmp_path / "missing")
    assert cached_export(checkpoint, options) == entry
    assert entry.is_dir() and not entry.is_symlink() and entry_problem(entry) is None
    assert (entry / "model.onnx").read_bytes() == intact
    assert (elsewhere / "keep.txt").read_text() == "not the cache's"  # a link is removed, not followed


def test_an_entry_that_cannot_be_removed_is_a_one_line_error_about_the_cache(cache, hf_model_dir, monkeypatch):
    import os

    from structsent.errors import OutputWriteError

    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    (entry / "model.onnx").write_bytes(b"damaged")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(entry))

    monkeypatch.setattr(os, "rmdir", refuse)  # as when the entry's files belong to another user
    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(OutputWriteError, match="is damaged .*and cannot be removed: Permission denied .*STRUCTSENT_CACHE") as caught:
        cached_export(checkpoint, options)
    assert "\n" not in str(caught.value)


def test_a_damaged_entry_in_a_read_only_cache_runs_torch_with_auto_and_names_the_cache_with_onnx(
        hf_model_dir, tmp_path, monkeypatch, caplog):
    """A damaged entry that could not be discarded (a read-only cache) failed the load as a broken
    model (exit 3) even with backend='auto', which runs torch for every other unusable cache."""
    import subprocess

    from structsent.errors import OutputWriteError

    from ..conftest import small_filesystem

    with small_filesystem(tmp_path / "ro", size="20m") as cache:
        monkeypatch.setenv("STRUCTSENT_CACHE", str(cache))
        checkpoint = load_checkpoint(hf_model_dir)
        entry = cached_export(checkpoint, ExportOptions(precision="fp32", optimize=True))  # what auto uses
        graph = entry / "model.onnx"
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0x40
        graph.write_bytes(bytes(data))
        if subprocess.run(["mount", "-o", "remount,ro", str(cache)]).returncode != 0:
            pytest.skip("this machine does not allow remounting a tmpfs read-only")
        with caplog.at_level(logging.WARNING, logger="structsent"):
            assert structsent.load(hf_model_dir, device="cpu").runner.name == "torch"
        assert any("running torch instead" in r.getMessage() for r in caplog.records)
        with pytest.raises(OutputWriteError, match=f"{entry}.* damaged .*cannot be removed: Read-only file system "
                                                   r"\(errno 30\).*STRUCTSENT_CACHE") as caught:
            structsent.load(hf_model_dir, backend="onnx", device="cpu")
        assert "\n" not in str(caught.value)


def test_an_entry_and_its_files_get_the_modes_of_new_files_under_the_umask(cache, hf_model_dir):
    """Entries were made by mkdtemp (0700) and renamed into place: a cache one user warmed (root in
    a container build, a shared team cache) could not be read by anyone else."""
    previous = os.umask(0o002)
    try:
        entry = cached_export(load_checkpoint(hf_model_dir), ExportOptions(precision="fp32", optimize=False))
    finally:
        os.umask(previous)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in [entry, *entry.iterdir()]}
    assert modes == {path.name: oct(0o775 if path.is_dir() else 0o664) for path in [entry, *entry.iterdir()]}


def test_an_entry_that_cannot_be_read_says_so_and_auto_runs_torch(cache, hf_model_dir, monkeypatch, caplog):
    """Another user's private entry (mode 0700) was reported as a cache that "cannot write"."""
    from pathlib import Path

    from structsent.errors import OutputWriteError

    entry = cached_export(load_checkpoint(hf_model_dir), ExportOptions(precision="fp32", optimize=True))
    real_stat = os.stat

    def refused_inside_the_entry(path, *args, **kwargs):  # as for another user's 0700 directory (root reads all)
        if Path(path).parent == entry:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refused_inside_the_entry)
    with pytest.raises(OutputWriteError, match=f"cannot read the ONNX export cache entry {entry}: Permission denied "
                                               r"\(errno 13\)") as caught:
        structsent.load(hf_model_dir, backend="onnx", device="cpu")
    assert "cannot write" not in str(caught.value) and "\n" not in str(caught.value)
    with caplog.at_level(logging.WARNING, logger="structsent"):
        assert structsent.load(hf_model_dir, device="cpu").runner.name == "torch"
    assert any("cannot read" in r.getMessage() for r in caplog.records)


def test_load_recovers_from_a_truncated_cache_entry(cache, hf_model_dir):
    clf = structsent.load(hf_model_dir, backend="onnx", device="cpu")
    graph = clf.plan.model_file
    graph.write_bytes(graph.read_bytes()[:1000])
    again = structsent.load(hf_model_dir, backend="onnx", device="cpu")
    assert again.plan.model_file == graph
    assert [r.label for r in again(["好评", "差评"])] == [r.label for r in clf(["好评", "差评"])]


def test_two_threads_loading_one_model_on_an_empty_cache_both_succeed(cache, hf_model_dir):
    """The exporter keeps global state: two threads tracing at once failed one of them."""
    import threading

    results, errors = [], []

    def load() -> None:
        try:
            results.append(structsent.load(hf_model_dir, backend="onnx")(["好评"])[0].label)
        except Exception as err:  # noqa: BLE001 - the test reports whatever a thread raised
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    assert len(list((cache / "onnx").iterdir())) == 1  # exported once: the others found the entry


# -- a cache or an output that cannot be written; exports killed half-way ----------------------------------
def test_a_cache_that_cannot_be_written_is_one_line_with_backend_onnx_and_torch_with_auto(tmp_path, monkeypatch,
                                                                                          hf_model_dir, caplog):
    from structsent.errors import OutputWriteError

    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(OutputWriteError, match=r"cannot write the ONNX export cache .*a-file/onnx: Not a directory "
                                               r"\(errno 20\); .*STRUCTSENT_CACHE"):
        structsent.load(hf_model_dir, backend="onnx", device="cpu")
    with caplog.at_level(logging.WARNING, logger="structsent"):
        assert structsent.load(hf_model_dir, device="cpu").runner.name == "torch"
    assert any("running torch instead" in r.getMessage() for r in caplog.records)


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(hf_model_dir, tmp_path):
    from ..conftest import run_structsent, small_filesystem

    with small_filesystem(tmp_path / "small", size="256k") as small:
        proc = run_structsent("export", hf_model_dir, "-o", small / "out", "--validate-n", "0", text=True)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"structsent: error: cannot write the export to {small}: No space left on device (errno 28); nothing "
            f"was replaced at {small / 'out'}"]
        assert list(small.iterdir()) == []


def abandoned_name(prefix: str, pid: int, host: str | None = None) -> str:
    import socket

    return f"{prefix}{host or socket.gethostname()}-{pid}-0a1b2c3d"


def test_staging_left_by_a_killed_export_is_removed_by_the_next_one(cache, hf_model_dir, tmp_path):
    """A kill -9 during a first-use export left a whole graph in the cache (and one in the temporary
    directory) that no later run removed. Staging directories carry host and process id; the next
    export removes those of this host whose process has ended, and leaves any other alone."""
    import subprocess
    import sys

    from structsent.onnx.export import SCRATCH_PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    onnx_dir = cache / "onnx"
    onnx_dir.mkdir(parents=True)
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    abandoned = [onnx_dir / abandoned_name(".export-", int(dead)),
                 onnx_dir / (abandoned_name("..export-", int(dead)) + ".export-" + abandoned_name("", int(dead))),
                 scratch_root / abandoned_name(SCRATCH_PREFIX, int(dead))]
    kept = [onnx_dir / abandoned_name(".export-", os.getpid()),  # a live export (this process)
            onnx_dir / abandoned_name(".export-", int(dead), host="another-host"),  # a shared cache
            scratch_root / "structsent-export-unrelated"]
    for directory in abandoned + kept:
        directory.mkdir()
        (directory / "model.onnx").write_bytes(b"\0" * 1000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(scratch_root))
        import tempfile

        patch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
        cached_export(load_checkpoint(hf_model_dir), ExportOptions(precision="fp32", optimize=False))
    assert [d for d in abandoned if d.exists()] == []
    assert all(d.exists() for d in kept)


def test_the_key_covers_weight_shards_an_index_places_in_a_subdirectory(hf_model_dir, tmp_path):
    """Only the files directly in the directory were hashed: new weights in shards/ kept the old
    export, and its labels, on the default path."""
    from safetensors.torch import save_file

    from structsent.onnx.cache import cache_key

    from ..conftest import sharded_copy

    directory = tmp_path / "sharded"
    weights = sharded_copy(hf_model_dir, directory)
    options = ExportOptions(precision="fp32", optimize=False)
    before = cache_key(directory, options)
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, directory / "shards" / "part-1.safetensors", metadata={"format": "pt"})
    after = cache_key(directory, options)
    assert after != before
    (directory / "shards" / "notes.txt").write_text("not read by a load")  # only what a load reads counts
    assert cache_key(directory, options) == after


@pytest.mark.parametrize("copied", ["the graph and its digest", "the whole entry"])
def test_another_exports_graph_copied_into_an_entry_is_discarded_not_run(cache, hf_model_dir, caplog, copied):
    """The digest file vouched for the graph, not for which export it was: an int8 entry's graph and
    digest copied into the fp32 entry ran as fp32 (info() said fp32) without a word."""
    import shutil

    checkpoint = load_checkpoint(hf_model_dir)
    fp32, int8 = ExportOptions(precision="fp32", optimize=False), ExportOptions(precision="int8", optimize=False)
    entry, other = cached_export(checkpoint, fp32), cached_export(checkpoint, int8)
    intact = (entry / "model.onnx").read_bytes()
    assert (other / "model.onnx").read_bytes() != intact
    if copied == "the whole entry":
        shutil.rmtree(entry)
        shutil.copytree(other, entry)
    else:
        for name in ("model.onnx", "model.onnx.blake2b"):
            shutil.copyfile(other / name, entry / name)
    assert entry_problem(entry) == (f"written for another export (key {other.name!r}): copied or moved here"
                                    if copied == "the whole entry" else
                                    "model.onnx is not the graph exported here (another export's, copied in)")
    with caplog.at_level(logging.WARNING, logger="structsent.onnx"):
        assert cached_export(checkpoint, fp32) == entry
    assert (entry / "model.onnx").read_bytes() == intact and entry_problem(entry) is None
    assert any("is unusable" in r.getMessage() for r in caplog.records)


def test_an_entry_records_its_key_and_no_staging_path(cache, hf_model_dir):
    import json

    entry = cached_export(load_checkpoint(hf_model_dir), ExportOptions(precision="fp32", optimize=False))
    record = json.loads((entry / "cache_entry.json").read_text(encoding="utf-8"))
    assert record == {"key": entry.name, "graph": (entry / "model.onnx.blake2b").read_text(encoding="ascii")}
    report = json.loads((entry / "export_report.json").read_text(encoding="utf-8"))
    assert "directory" not in report  # it named the staging directory, gone once the entry was renamed into place
    assert report["precision"] == "fp32"


def test_a_dangling_link_in_an_entrys_place_is_said_to_be_one(cache, hf_model_dir, tmp_path, caplog):
    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    import shutil

    shutil.rmtree(entry)
    entry.symlink_to(tmp_path / "missing")
    assert entry_problem(entry) == "a link to a missing path"  # it said "absent", then "discarding it"
    with caplog.at_level(logging.WARNING, logger="structsent.onnx"):
        cached_export(checkpoint, options)
    assert any("(a link to a missing path); discarding it" in r.getMessage() for r in caplog.records)


def test_an_export_that_loses_the_race_to_another_process_says_so_and_uses_the_winner(cache, hf_model_dir, caplog):
    """Two processes exporting into an empty cache both said "exported it ... to ENTRY", though one
    export was thrown away for the other's (stood in for here: the entry is there when the rename comes)."""
    from structsent.onnx.cache import _export_into

    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="structsent.onnx"):
        _export_into(entry, checkpoint, options)
    messages = [r.getMessage() for r in caplog.records]
    assert any("but another process's export reached" in m and str(entry) in m for m in messages), messages
    assert not any("later loads reuse it" in m for m in messages)
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before and entry_problem(entry) is None
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # its staging removed


def test_control_characters_in_the_cache_path_are_escaped_in_the_log(tmp_path, monkeypatch, hf_model_dir, caplog):
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "c\n\x1b[31m"))
    with caplog.at_level(logging.WARNING, logger="structsent.onnx"):
        cached_export(load_checkpoint(hf_model_dir), ExportOptions(precision="fp32", optimize=False))
    (message,) = [r.getMessage() for r in caplog.records if "first use" in r.getMessage()]
    assert "c\\n\\x1b[31m" in message and "\n" not in message and "\x1b" not in message


@pytest.mark.parametrize("record", ["", "[]", '{"key": 1, "graph": "x"}', "{not json"])
def test_an_entry_record_that_is_not_one_is_discarded(cache, hf_model_dir, record):
    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    (entry / "cache_entry.json").write_text(record, encoding="utf-8")
    assert entry_problem(entry) == "cache_entry.json is not what an export writes"
    assert cached_export(checkpoint, options) == entry and entry_problem(entry) is None


def test_an_entry_record_that_is_not_a_regular_file_is_called_so(cache, hf_model_dir):
    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    (entry / "cache_entry.json").unlink()
    (entry / "cache_entry.json").mkdir()  # it was called missing ("no cache_entry.json")
    assert entry_problem(entry) == "cache_entry.json is not a regular file"
    assert cached_export(checkpoint, options) == entry and entry_problem(entry) is None


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_cache_variable_is_refused_as_a_blank_engine_variable_is(monkeypatch, tmp_path, blank):
    """STRUCTSENT_CACHE= was taken as unset (the default cache was written), where STRUCTSENT_DEVICE=
    is refused naming the variable; it is no directory named " " where the command runs either."""
    from structsent.onnx.cache import cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("STRUCTSENT_CACHE", blank)
    with pytest.raises(structsent.ConfigError, match=re.escape(f"STRUCTSENT_CACHE={blank!r}: expected a directory")):
        cache_root()
    assert not (tmp_path / "structsent").exists()


def test_a_blank_cache_variable_stops_the_command_in_one_line(tmp_path):
    from ..conftest import run_structsent

    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    proc = run_structsent("label", source, "-o", tmp_path / "out.jsonl", "--backend", "onnx", text=True,
                          env={"STRUCTSENT_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert (proc.returncode, proc.stderr) == (2, "structsent: error: STRUCTSENT_CACHE='': expected a directory (unset it for "
                                                 "the default, $XDG_CACHE_HOME/structsent or ~/.cache/structsent)\n")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "xdg" / "structsent").exists()


def test_a_relative_cache_variable_names_one_directory_whatever_the_working_directory_later(monkeypatch, tmp_path):
    """A relative STRUCTSENT_CACHE was taken from the working directory at each use: a program that
    changed directory between two loads had two caches."""
    from structsent.onnx.cache import cache_root

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("STRUCTSENT_CACHE", "relative-cache-x7")
    monkeypatch.chdir(tmp_path / "a")
    assert cache_root() == tmp_path / "a" / "relative-cache-x7"
    monkeypatch.chdir(tmp_path / "b")
    assert cache_root() == tmp_path / "a" / "relative-cache-x7"
