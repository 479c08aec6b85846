"""The ONNX Runtime backend: same results as torch fp32, batch invariance, int8, typed errors."""

import sys

import numpy as np
import pytest

import structsent
from structsent.errors import ConfigError, MissingExtraError

from ..conftest import positive

pytest.importorskip("onnxruntime")

FP32_PROBABILITY_TOLERANCE = 1e-5  # fused ONNX fp32 vs torch fp32: summation order only
# Dynamic int8 quantizes activations per batch, so a text's scores depend a little on its batch.
INT8_BATCH_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("onnx-cache")
        patch.setenv("STRUCTSENT_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def onnx_clf(hf_model_dir, cache):
    return structsent.load(hf_model_dir, backend="onnx", device="cpu")


@pytest.fixture(scope="module")
def torch_clf(hf_model_dir):
    return structsent.load(hf_model_dir, backend="torch", device="cpu")


def test_onnx_matches_torch_fp32(onnx_clf, torch_clf, real_reviews):
    texts = real_reviews[:80] + ["好" * 700, "差"]
    onnx_results, torch_results = onnx_clf(texts), torch_clf(texts)
    np.testing.assert_allclose(positive(onnx_results), positive(torch_results), atol=FP32_PROBABILITY_TOLERANCE)
    assert [r.label for r in onnx_results] == [r.label for r in torch_results]
    assert [r.truncated for r in onnx_results] == [r.truncated for r in torch_results]


def test_runner_describes_itself(onnx_clf, cache):
    info = onnx_clf.info()
    assert (info["backend"], info["device"], info["precision"]) == ("onnx", "cpu", "fp32")
    assert onnx_clf.runner.model_file.is_relative_to(cache)


def test_idle_runtime_threads_sleep_instead_of_spinning(onnx_clf):
    options = onnx_clf.runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_alone_equals_inside_any_batch(onnx_clf, real_reviews):
    texts = real_reviews[:30]
    alone = np.array([onnx_clf([t])[0].scores["正面"] for t in texts])
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(positive(onnx_clf(texts)), alone, atol=FP32_PROBABILITY_TOLERANCE)
    np.testing.assert_allclose(positive(onnx_clf([texts[i] for i in perm])), alone[perm], atol=FP32_PROBABILITY_TOLERANCE)


def test_same_batch_planner_as_torch_padded(onnx_clf, hf_model_dir, real_reviews):
    texts = real_reviews[:50]
    _, onnx_stats = onnx_clf.label_with_stats(texts)
    torch_padded = structsent.load(hf_model_dir, backend="torch", device="cpu", attention="padded")
    _, torch_stats = torch_padded.label_with_stats(texts)
    assert (onnx_stats.batches, onnx_stats.padded_tokens) == (torch_stats.batches, torch_stats.padded_tokens)


def test_int8_runs_and_stays_close(hf_model_dir, torch_clf, cache, real_reviews):
    clf = structsent.load(hf_model_dir, backend="onnx", precision="int8")
    assert clf.info()["precision"] == "int8"
    texts = real_reviews[:40]
    got, expected = positive(clf(texts)), positive(torch_clf(texts))
    assert np.abs(got - expected).max() < INT8_BATCH_TOLERANCE
    alone = np.array([clf([t])[0].scores["正面"] for t in texts[:10]])
    np.testing.assert_allclose(got[:10], alone, atol=INT8_BATCH_TOLERANCE)


def test_second_load_reuses_the_export(hf_model_dir, onnx_clf, cache):
    again = structsent.load(hf_model_dir, backend="onnx")
    assert again.runner.model_file == onnx_clf.runner.model_file


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precisions_onnx_does_not_run_are_config_errors(hf_model_dir, cache, precision):
    with pytest.raises(ConfigError, match="backend='torch'"):
        structsent.load(hf_model_dir, backend="onnx", precision=precision)


def test_cuda_without_provider_is_a_config_error(hf_model_dir, cache):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
        structsent.load(hf_model_dir, backend="onnx", device="cuda")


def test_missing_onnxruntime_names_the_extra(hf_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"structsent\[onnx\]"):
        structsent.load(hf_model_dir, backend="onnx", precision="fp32")
    assert structsent.load(hf_model_dir, device="cpu").runner.name == "torch"  # auto falls back to torch


# -- graphs that are not structsent's: one line at load, not onnxruntime's traceback mid-job -----------
def foreign_graph(path, *, output="logits", inputs=("input_ids", "attention_mask"), batch="batch", transpose=False):
    """A tiny graph of the classifier's outline: mean id x weights -> (texts, 2), or as told otherwise."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", [inputs[0]], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], keepdims=1, axes=[1]),
             helper.make_node("Mul", ["m", "w"], ["p"]),
             helper.make_node("Transpose", ["p"], [output], perm=[1, 0]) if transpose
             else helper.make_node("Identity", ["p"], [output])]
    declared = [2, batch] if transpose else [batch, 2]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, "sequence"]) for n in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, declared)],
        [numpy_helper.from_array(np.array([[0.001, -0.001]], dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def exported_copy(hf_model_dir, tmp_path):
    """An ONNX directory (config, vocabulary) whose graph the test replaces."""
    import shutil

    from structsent.config import Precision
    from structsent.models import load_checkpoint
    from structsent.onnx.export import ExportOptions, export_checkpoint

    out = tmp_path / "m"
    export_checkpoint(load_checkpoint(hf_model_dir), out, ExportOptions(precision=Precision.FP32, optimize=False))
    shutil.copy(out / "config.json", tmp_path / "config.json")
    return out


@pytest.mark.parametrize(("graph", "message"), [
    ({"output": "output"}, "it has no output named 'logits' (its outputs: output)"),
    ({"inputs": ("ids", "mask")}, "it lacks the input 'input_ids'; it lacks the input 'attention_mask'; "
                                  "it has an input 'ids' that is not fed"),
    ({"batch": 2}, "the input 'input_ids' has a fixed batch size 2"),
    ({"transpose": True}, "the output 'logits' has a fixed batch size 2"),
], ids=["output-name", "input-names", "static-batch", "labels-by-texts"])
def test_a_graph_structsent_cannot_feed_or_read_is_refused_at_load(hf_model_dir, cache, tmp_path, graph, message):
    directory = exported_copy(hf_model_dir, tmp_path)
    foreign_graph(directory / "model.onnx", **graph)
    (directory / "model.onnx.blake2b").unlink()  # a graph another program wrote: no digest of the export's
    with pytest.raises(structsent.ModelFormatError, match="not a text classifier structsent can run: " +
                       message.replace("(", r"\(").replace(")", r"\)")):
        structsent.load(directory, device="cpu")



def test_a_model_of_fewer_than_16_positions_exports_and_agrees_with_torch(tmp_path, cache):
    """The export traced a batch 16 tokens long: a model of 8 positions failed on the default CPU path."""
    from ..conftest import make_hf_model, write_tokenizer_files

    make_hf_model(max_position_embeddings=8).save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)
    texts = ["好吃", "差评，太慢了，再也不来", "一般"]
    onnx_results = structsent.load(tmp_path, backend="onnx", device="cpu")(texts)
    torch_results = structsent.load(tmp_path, backend="torch", device="cpu")(texts)
    np.testing.assert_allclose(positive(onnx_results), positive(torch_results), atol=FP32_PROBABILITY_TOLERANCE)
    assert [r.truncated for r in onnx_results] == [False, True, False]
