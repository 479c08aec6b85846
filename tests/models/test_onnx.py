"""Exported ONNX directories: a broken or tampered directory is a one-line ModelFormatError."""

import json
import shutil

import pytest

import structsent
from structsent.models import load_checkpoint
from structsent.models.onnx import EXPORT_FORMAT_VERSION, OnnxCheckpoint

from ..conftest import run_structsent

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, hf_model_dir):
    from structsent.config import Precision
    from structsent.onnx.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("exported") / "m"
    export_checkpoint(load_checkpoint(hf_model_dir), out, ExportOptions(precision=Precision.FP32, optimize=False))
    return out


def copy_export(exported, tmp_path, **onnx_changes):
    d = shutil.copytree(exported, tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["structsent_onnx"].update(onnx_changes)
    (d / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return d


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_unreadable_graph_is_a_model_format_error_naming_the_file(tmp_path, exported, damage):
    d = copy_export(exported, tmp_path)
    (d / "model.onnx.blake2b").unlink()  # an export from before digests: the runtime finds the damage
    graph = d / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "random": bytes(range(256)) * 20}[damage])
    with pytest.raises(structsent.ModelFormatError, match=r"model.onnx: cannot open the ONNX model") as caught:
        structsent.load(d)
    assert "\n" not in str(caught.value)


def test_unreadable_graph_exits_3_with_one_line(tmp_path, exported):
    d = copy_export(exported, tmp_path)
    (d / "model.onnx").write_bytes(b"")  # the digest check refuses it before the runtime opens it
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    proc = run_structsent("label", source, "-o", tmp_path / "out.jsonl", "--model", d, text=True)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.onnx: does not match the digest recorded at export" in lines[0], proc.stderr


@pytest.mark.parametrize("model_file", ["../../etc/passwd", "/etc/passwd", "../other/model.onnx", ".", ""])
def test_model_file_outside_the_directory_is_refused(tmp_path, exported, model_file):
    d = copy_export(exported, tmp_path, model_file=model_file)
    with pytest.raises(structsent.ModelFormatError, match="model_file"):
        load_checkpoint(d)


def test_model_file_inside_the_directory_is_followed(tmp_path, exported):
    d = copy_export(exported, tmp_path, model_file="graphs/../graph.onnx")
    (d / "model.onnx").rename(d / "graph.onnx")
    checkpoint = load_checkpoint(d)
    assert isinstance(checkpoint, OnnxCheckpoint) and checkpoint.model_file == d / "graph.onnx"


def test_newer_format_version_is_refused(tmp_path, exported):
    d = copy_export(exported, tmp_path, format_version=EXPORT_FORMAT_VERSION + 1)
    with pytest.raises(structsent.ModelFormatError, match="newer than this structsent reads.*upgrade structsent"):
        load_checkpoint(d)


@pytest.mark.parametrize("precision", ["fp64", 8, None])
def test_a_precision_no_export_writes_is_refused(tmp_path, exported, precision):
    d = copy_export(exported, tmp_path, precision=precision)
    with pytest.raises(structsent.ModelFormatError, match="structsent_onnx.precision must be one of fp32, int8"):
        load_checkpoint(d)


def test_a_config_claiming_more_vocabulary_or_positions_than_the_graph_holds_is_refused(tmp_path, exported):
    d = copy_export(exported, tmp_path)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    vocab = (d / "vocab.txt").read_text(encoding="utf-8")
    (d / "vocab.txt").write_text(vocab + "".join(f"[extra{i}]\n" for i in range(256)), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match="vocab.txt that belongs to these weights"):
        load_checkpoint(d)
    (d / "vocab.txt").write_text(vocab, encoding="utf-8")
    longer = {**config, "max_position_embeddings": config.get("max_position_embeddings", 512) * 2}
    (d / "config.json").write_text(json.dumps(longer), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match="max_position_embeddings is .* but the graph model.onnx"):
        load_checkpoint(d)
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert load_checkpoint(d).shape.vocab_size == config["vocab_size"]


@pytest.mark.parametrize("vocab_size", [30000, 21000, 21200])
def test_a_config_vocab_size_other_than_the_graphs_blames_config_json(tmp_path, exported, vocab_size):
    """The tokenizer was measured against config.json's vocab_size and blamed ("use the vocab.txt
    that belongs to these weights") when config.json was the damaged file."""
    d = copy_export(exported, tmp_path)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    (d / "config.json").write_text(json.dumps({**config, "vocab_size": vocab_size}), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(d)
    assert str(caught.value) == (f"{d / 'config.json'}: vocab_size is {vocab_size} but the graph model.onnx holds "
                                 f"{config['vocab_size']} token embeddings; config.json belongs to another export")


@pytest.mark.parametrize("name", ["model.onnx", "vocab.txt", "tokenizer_config.json"])
def test_an_export_file_that_is_a_pipe_is_refused_by_name(tmp_path, exported, name):
    import os

    d = copy_export(exported, tmp_path)
    (d / name).unlink()
    os.mkfifo(d / name)
    with pytest.raises(structsent.ModelFormatError, match=rf"/{name}: not a regular file \(a named pipe\)$"):
        load_checkpoint(d)


def test_missing_graph_is_named(tmp_path, exported):
    d = copy_export(exported, tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(structsent.ModelFormatError, match=r"no model.onnx \(the exported ONNX graph\)"):
        load_checkpoint(d)


def test_a_model_onnx_left_in_a_hugging_face_directory_does_not_replace_its_weights(tmp_path, exported, hf_model_dir):
    """Any model.onnx made a directory an ONNX one: beside model.safetensors, another model's graph
    answered for these weights, and backend='torch' was refused. The weights are the model."""
    d = shutil.copytree(hf_model_dir, tmp_path / "hf")
    shutil.copy(exported / "model.onnx", d / "model.onnx")
    checkpoint = load_checkpoint(d)
    assert checkpoint.format == "huggingface" and not isinstance(checkpoint, OnnxCheckpoint)
    texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"]
    clean = structsent.load(hf_model_dir, backend="torch", device="cpu")(texts)
    assert structsent.load(d, backend="torch", device="cpu")(texts) == clean
    (d / "model.safetensors").unlink()  # the graph alone (with config and vocabulary): an ONNX directory
    assert isinstance(load_checkpoint(d), OnnxCheckpoint)


def test_a_config_json_that_is_a_pipe_is_refused_not_waited_on(tmp_path, hf_model_dir):
    import os
    import subprocess
    import sys

    d = shutil.copytree(hf_model_dir, tmp_path / "hf")
    (d / "config.json").unlink()
    os.mkfifo(d / "config.json")
    proc = subprocess.run([sys.executable, "-c", f"import structsent; structsent.load({str(d)!r})"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "config.json: not a regular file" in proc.stderr


@pytest.mark.parametrize(("precision", "remedy"), [
    ("int8", "structsent export SOURCE_MODEL --int8 -o DIR"),
    ("fp16", "no export holds fp16: load the source checkpoint with backend='torch', precision='fp16'"),
])
def test_asking_an_export_for_another_precision_says_what_gives_it(exported, precision, remedy):
    """Every refusal said to export again "with --int8", which gives int8 again, and no export gives fp16."""
    with pytest.raises(structsent.ConfigError) as caught:
        structsent.load(exported, precision=precision)
    assert "holds an ONNX model of precision fp32" in str(caught.value) and remedy in str(caught.value)


def flip_one_bit_in_a_weight(graph) -> None:
    """One exponent bit of one float of the largest initializer: the graph still opens and runs."""
    import onnx
    from onnx import numpy_helper

    largest = max(onnx.load(str(graph)).graph.initializer, key=lambda table: numpy_helper.to_array(table).size)
    raw = bytearray(graph.read_bytes())
    offset = raw.find(numpy_helper.to_array(largest).tobytes())
    assert offset >= 0
    raw[offset + 3] ^= 0x40
    graph.write_bytes(bytes(raw))


def test_a_flipped_bit_in_an_exported_graph_is_a_one_line_error_naming_the_file(tmp_path, exported):
    """A bit flipped in an export's model.onnx loaded and labelled every text wrongly, silently."""
    d = copy_export(exported, tmp_path)
    flip_one_bit_in_a_weight(d / "model.onnx")
    with pytest.raises(structsent.ModelFormatError) as caught:
        structsent.load(d)
    message = str(caught.value)
    assert f"{d / 'model.onnx'}: does not match the digest recorded at export" in message and "\n" not in message


def test_an_export_written_before_digests_loads_as_before(tmp_path, exported):
    d = copy_export(exported, tmp_path)
    (d / "model.onnx.blake2b").unlink(missing_ok=True)
    assert [r.label for r in structsent.load(d)(["好评", "差评"])] == [r.label for r in structsent.load(exported)(["好评", "差评"])]


@pytest.mark.parametrize("replace", ["directory", "dangling link"])
def test_a_recorded_digest_that_is_no_file_is_refused_not_taken_for_no_digest(tmp_path, exported, replace):
    """A model.onnx.blake2b that was a directory loaded unchecked, as an export from before digests."""
    d = copy_export(exported, tmp_path)
    flip_one_bit_in_a_weight(d / "model.onnx")
    recorded = d / "model.onnx.blake2b"
    recorded.unlink()
    if replace == "directory":
        recorded.mkdir()
    else:
        recorded.symlink_to(tmp_path / "nowhere")
    with pytest.raises(structsent.ModelFormatError, match="the graph's recorded digest is not a readable file"):
        structsent.load(d)


@pytest.mark.parametrize("labels", [None, {"0": "负面", "1": "中性", "2": "正面"}])
def test_a_config_num_labels_other_than_the_graphs_blames_config_json(tmp_path, exported, labels):
    """num_labels edited to 3 blamed id2label ("names 2 labels but the classifier has 3 outputs"),
    though the graph gives 2 outputs and id2label named them; with 3 labels named, the warm-up
    batch caught it after the load."""
    d = copy_export(exported, tmp_path)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    edited = {**config, "num_labels": 3, **({"id2label": labels} if labels else {})}
    (d / "config.json").write_text(json.dumps(edited, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(d)
    assert str(caught.value) == (f"{d / 'config.json'}: num_labels is 3 but the graph model.onnx gives 2 outputs "
                                 "per text; config.json belongs to another export")


def test_a_config_hidden_size_other_than_the_graphs_blames_config_json(tmp_path, exported):
    d = copy_export(exported, tmp_path)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    wider = config["hidden_size"] * 2
    (d / "config.json").write_text(json.dumps({**config, "hidden_size": wider}), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(d)
    assert str(caught.value) == (f"{d / 'config.json'}: hidden_size is {wider} but the graph model.onnx's embeddings "
                                 f"are {config['hidden_size']} wide; config.json belongs to another export")
