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
