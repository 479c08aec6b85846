"""The export cache: a damaged entry is discarded and exported again, once, with a warning."""

import logging

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


def test_an_entry_that_cannot_be_removed_is_a_one_line_error(cache, hf_model_dir, monkeypatch):
    import os

    from structsent.errors import ModelFormatError

    checkpoint = load_checkpoint(hf_model_dir)
    options = ExportOptions(precision="fp32", optimize=False)
    entry = cached_export(checkpoint, options)
    (entry / "model.onnx").write_bytes(b"damaged")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(entry))

    monkeypatch.setattr(os, "rmdir", refuse)  # as when the entry's files belong to another user
    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(ModelFormatError, match="cannot be removed .*STRUCTSENT_CACHE"):
        cached_export(checkpoint, options)


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
