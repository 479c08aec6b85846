"""Loading every supported format, and a clear typed error for every broken one."""

import json
import re
import shutil

import pytest
import torch

import structsent
from structsent.models import load_checkpoint
from structsent.models.checkpoint import choose_labels

from .conftest import make_hf_model, run_structsent, write_tokenizer_files


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_hf_directory_loads_with_labels_from_id2label(hf_model_dir):
    ckpt = load_checkpoint(hf_model_dir)
    assert ckpt.format == "huggingface" and ckpt.labels == ("负面", "正面")
    assert ckpt.shape.num_layers == 2 and ckpt.shape.hidden_size == 32


def test_pytorch_bin_and_tokenizer_json_load(tmp_path, clf, real_reviews):
    from transformers import BertTokenizer

    model = make_hf_model()  # the same weights as hf_model_dir (same seed)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.to_json_file(tmp_path / "config.json")
    write_tokenizer_files(tmp_path)
    BertTokenizer.from_pretrained(str(tmp_path)).save_pretrained(str(tmp_path))  # writes tokenizer.json
    (tmp_path / "vocab.txt").unlink()
    a = structsent.load(tmp_path, device="cpu")(real_reviews[:20])
    b = clf(real_reviews[:20])
    assert [r.label for r in a] == [r.label for r in b]
    assert max(abs(x.scores["正面"] - y.scores["正面"]) for x, y in zip(a, b)) < 1e-6


def test_modelscope_labels_from_label_mapping_and_default_pair(modelscope_dirs):
    assert load_checkpoint(modelscope_dirs["encoder"]).labels == ("负面", "正面")
    assert load_checkpoint(modelscope_dirs["bert"]).labels == ("负面", "正面")  # no mapping: StructBERT pair


def test_label_rules(tmp_path):
    assert choose_labels({"id2label": {"0": "neg", "1": "pos"}}, 2, tmp_path, structbert=False) == ("neg", "pos")
    generic = {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}
    assert choose_labels(generic, 2, tmp_path, structbert=True) == ("负面", "正面")
    assert choose_labels(generic, 2, tmp_path, structbert=False) == ("LABEL_0", "LABEL_1")
    # No id2label is what transformers names LABEL_0, LABEL_1: a two-output model of another kind
    # (0 = positive, spam/ham) was named 负面/正面 without a word.
    assert choose_labels({}, 2, tmp_path, structbert=False) == ("LABEL_0", "LABEL_1")
    assert choose_labels({}, 2, tmp_path, structbert=True) == ("负面", "正面")
    assert choose_labels({}, 3, tmp_path, structbert=True) == ("LABEL_0", "LABEL_1", "LABEL_2")
    (tmp_path / "label_mapping.json").write_text(json.dumps({"0": "差", "1": "中", "2": "好"}))
    assert choose_labels({}, 3, tmp_path, structbert=True) == ("差", "中", "好")


@pytest.mark.parametrize("declared", [
    {"label_mapping.json": {"负面": 1, "正面": 0}},
    {"configuration.json": {"framework": "pytorch", "model": {"type": "structbert", "label2id": {"负面": 1, "正面": 0}}}},
    {"configuration.json": {"framework": "pytorch", "model": {"type": "structbert", "id2label": {"0": "正面", "1": "负面"}}}},
    {"configuration.json": {"model": {"type": "structbert"}, "preprocessor": {"label2id": {"负面": "1", "正面": "0"}}}},
    {"configuration.json": {"model": {"type": "structbert"}, "preprocessor": {"id2label": {"0": "正面", "1": "负面"}}}},
], ids=["label_mapping", "configuration_label2id", "configuration_id2label", "preprocessor_label2id",
        "preprocessor_id2label"])
def test_label_declarations_that_disagree_are_refused_not_one_chosen(tmp_path, modelscope_dirs, declared):
    """config.json said 0 = 负面, label_mapping.json 0 = 正面: the load took config.json's silently,
    where ModelScope's pipeline takes the mapping's, every label swapped for one of the two; and
    configuration.json's model.label2id was never read."""
    d = copy_dir(modelscope_dirs["bert"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    (d / "config.json").write_text(json.dumps({**config, "id2label": {"0": "负面", "1": "正面"}}), encoding="utf-8")
    assert load_checkpoint(d).labels == ("负面", "正面")
    for name, content in declared.items():
        (d / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match=r"config.json's id2label names the outputs \['负面', '正面'\], "
                                                          r".* \['正面', '负面'\]; which names are meant cannot be told"):
        load_checkpoint(d)
    (d / "config.json").write_text(json.dumps({**config, "id2label": {"0": "正面", "1": "负面"}}), encoding="utf-8")
    assert load_checkpoint(d).labels == ("正面", "负面")  # declared alike: taken
    config.pop("id2label", None)
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert load_checkpoint(d).labels == ("正面", "负面")  # declared in one place only: that one


def test_labels_declared_only_where_modelscope_reads_them_are_taken(tmp_path, modelscope_dirs):
    """configuration.json's preprocessor.label2id (string ids too) and config.json's label2id alone
    were never read: the StructBERT pair was put on a model that names its outputs the other way."""
    d = copy_dir(modelscope_dirs["bert"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config.pop("id2label", None), config.pop("label2id", None)
    (d / "config.json").write_text(json.dumps({**config, "label2id": {"正面": 0, "负面": 1}}), encoding="utf-8")
    assert load_checkpoint(d).labels == ("正面", "负面")
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    pipeline = {"model": {"type": "structbert", "label2id": {"LABEL_0": 0, "LABEL_1": 1}},  # numbers only: no names
                "preprocessor": {"type": "sen-cls-tokenizer", "label2id": {"positive": "0", "negative": "1"}}}
    (d / "configuration.json").write_text(json.dumps(pipeline), encoding="utf-8")
    assert load_checkpoint(d).labels == ("positive", "negative")
    (d / "label_mapping.json").write_text(json.dumps({"0": 0, "1": 1}), encoding="utf-8")  # labels named by digits
    with pytest.raises(structsent.ModelFormatError, match=r"label_mapping.json names the outputs \['0', '1'\], "
                                                          r"configuration.json's preprocessor.label2id"):
        load_checkpoint(d)


def test_a_checkpoint_under_a_name_that_is_not_utf8_loads(tmp_path, hf_model_dir, clf):
    """safetensors takes paths as UTF-8 text: a directory named b"model\\xff" was refused as corrupt
    weights ("download it again")."""
    import os

    d = copy_dir(hf_model_dir, os.fsdecode(os.fsencode(tmp_path) + b"/model\xff"))
    texts = ["好吃", "太差了"]
    assert [r.scores for r in structsent.load(d, backend="torch")(texts)] == \
        [r.scores for r in structsent.load(hf_model_dir, backend="torch")(texts)]
    assert [r.scores for r in structsent.load(d)(texts)] == [r.scores for r in clf(texts)]


def test_two_tensors_that_name_the_same_weight_are_refused(tmp_path, hf_model_dir):
    """module.classifier.bias beside classifier.bias (or LayerNorm.gamma beside .weight): the one read
    last replaced the other without a word, and every text flipped to 负面."""
    from safetensors.torch import load_file

    state = load_file(str(hf_model_dir / "model.safetensors"))
    for extra, of in (("module.classifier.bias", "classifier.bias"),
                      ("bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.weight")):
        d = copy_dir(hf_model_dir, tmp_path / extra)
        (d / "model.safetensors").unlink()
        torch.save({**state, extra: state[of] + 3.0}, d / "pytorch_model.bin")
        with pytest.raises(structsent.ModelFormatError, match=rf"tensors '.*' and '.*' are both '{re.escape(of)}'; "
                                                              "which one the model uses cannot be told"):
            structsent.load(d, device="cpu")


def test_vocabulary_lines_with_trailing_white_space_name_the_token_without_it(tmp_path, hf_model_dir, clf):
    """A line "好 " kept its space: every 好 became [UNK] without a word, where transformers and the
    Rust tokenizer read "好"."""
    from transformers import BertTokenizerFast

    d = copy_dir(hf_model_dir, tmp_path / "m")
    lines = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
    for token, spaces in (("好", " "), ("坏", "\t"), ("吃", "\u3000")):
        lines[lines.index(token)] = token + spaces
    (d / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    texts = ["好吃", "坏了", "很好"]
    edited = structsent.load(d, device="cpu")
    assert edited.tokenizer.content_ids(texts) == clf.tokenizer.content_ids(texts)
    assert edited.tokenizer.content_ids(texts) == [BertTokenizerFast(str(d / "vocab.txt"))(t, add_special_tokens=False)
                                                   ["input_ids"] for t in texts]
    assert [r.scores for r in edited(texts)] == [r.scores for r in clf(texts)]


def test_sharded_safetensors_load(tmp_path, hf_model_dir, clf, real_reviews):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in make_hf_model().state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(tmp_path / name))
    index = {"weight_map": {k: name for name, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(hf_model_dir / "config.json", tmp_path / "config.json")
    write_tokenizer_files(tmp_path)
    a = structsent.load(tmp_path, device="cpu")(real_reviews[:10])
    b = clf(real_reviews[:10])
    assert [r.label for r in a] == [r.label for r in b]
    assert max(abs(x.score - y.score) for x, y in zip(a, b)) < 1e-6


# -- errors -------------------------------------------------------------------------------------
def test_missing_directory_is_model_not_found(tmp_path):
    with pytest.raises(structsent.ModelNotFoundError, match="no such model directory"):
        structsent.load(tmp_path / "nope")


def test_missing_weights_name_the_fix(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(structsent.ModelFormatError, match="no model.safetensors or pytorch_model.bin"):
        structsent.load(d)


def test_corrupt_weights_name_the_file(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(structsent.ModelFormatError, match="model.safetensors.*corrupt"):
        structsent.load(d)


def test_corrupt_config_json(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    (d / "config.json").write_text("{not json")
    with pytest.raises(structsent.ModelFormatError, match="config.json: not valid JSON"):
        structsent.load(d)


def test_unknown_architecture(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(structsent.ModelFormatError, match="model_type 'gpt2' is not supported"):
        structsent.load(d)


def test_vocabulary_larger_than_embeddings(tmp_path):
    model = make_hf_model(vocab_size=1000)
    model.save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)  # 21128-entry vocab for 1000 embedding rows
    with pytest.raises(structsent.ModelFormatError, match="ids go up to 21127 but the embedding matrix has only 1000 rows"):
        structsent.load(tmp_path)


def test_missing_vocabulary(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    (d / "vocab.txt").unlink()
    with pytest.raises(structsent.ModelFormatError, match="no vocab.txt or tokenizer.json"):
        structsent.load(d)


def test_a_vocabulary_saved_with_a_byte_order_mark_is_refused_for_the_mark(tmp_path, hf_model_dir):
    # The mark became part of the first token: "the vocabulary lacks [PAD]", though line 1 said [PAD].
    d = copy_dir(hf_model_dir, tmp_path / "m")
    (d / "vocab.txt").write_bytes(b"\xef\xbb\xbf" + (d / "vocab.txt").read_bytes())
    with pytest.raises(structsent.ModelFormatError, match=r"vocab.txt: begins with a UTF-8 byte order mark, which would "
                       r"be part of its first token; save it without one \(as UTF-8, not 'UTF-8 with BOM'\)$"):
        structsent.load(d)


def test_config_and_weights_disagree(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(structsent.ModelFormatError,
                       match="declares num_hidden_layers=3 but the weights hold 2 encoder layers"):
        structsent.load(d)


def test_a_config_declaring_a_billion_layers_is_refused_at_once(tmp_path, hf_model_dir):
    """The expected shape of every declared layer was listed before any was compared: memory grew
    without end (4.6 GB in 40 s). In a child process, so that a regression cannot take the suite down."""
    import subprocess
    import sys

    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**9}))
    proc = subprocess.run([sys.executable, "-c", f"import structsent; structsent.load({str(d)!r})"],
                          capture_output=True, text=True, timeout=120)
    assert "declares num_hidden_layers=1000000000 but the weights hold 2 encoder layers" in proc.stderr


def test_encoder_without_head(tmp_path, hf_model_dir):
    from safetensors.torch import load_file, save_file

    d = copy_dir(hf_model_dir, tmp_path / "m")
    state = {k: v for k, v in load_file(str(d / "model.safetensors")).items() if not k.startswith("classifier")}
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(structsent.ModelFormatError, match="no classification head"):
        structsent.load(d)


def test_hub_id_offline_fails_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELSCOPE_OFFLINE", "1")
    with pytest.raises(structsent.ModelNotFoundError) as info:
        structsent.load("damo/nlp_structbert_sentiment-classification_chinese-base")
    message = str(info.value)
    assert "modelscope download --model damo/nlp_structbert_sentiment-classification_chinese-base" in message
    assert "pass its path" in message


# -- weights that cannot give labels --------------------------------------------------------------
def copy_with_weights(src, dst, edit):
    """A copy of the safetensors model ``src`` whose tensors ``edit(state)`` changed in place."""
    from safetensors.torch import load_file, save_file

    d = copy_dir(src, dst)
    state = load_file(str(d / "model.safetensors"))
    edit(state)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def fill_with_nan(state):
    for tensor in state.values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))


def overflowing_head(state):
    # Finite weights (3e38 < float32 max) whose logits overflow to inf/nan on every text.
    state["classifier.weight"].fill_(3e38)


@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory, hf_model_dir):
    return copy_with_weights(hf_model_dir, tmp_path_factory.mktemp("nan") / "m", fill_with_nan)


def test_nan_weights_are_refused_at_load(nan_model_dir):
    with pytest.raises(structsent.ModelFormatError,
                       match=r"model.safetensors: tensor \S+ holds non-finite values \(nan\); the weights file is corrupt"):
        structsent.load(nan_model_dir, device="cpu")


@pytest.mark.parametrize(("table", "row", "value"), [
    ("word_embeddings", 8000, 1e35), ("position_embeddings", 300, 1e30), ("token_type_embeddings", 0, -4e18)])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_an_embedding_row_too_large_to_normalise_is_refused_at_load(hf_model_dir, tmp_path, table, row, value, backend):
    """A finite row no warm-up text uses (1e35) was flagged on one runtime (its normalisation
    overflowed) and labelled from a value rounded past meaning on the other; refused on both now."""
    from structsent.models.hf import embedding_limit

    name = f"bert.embeddings.{table}.weight"

    def damage(state):
        state[name][row].fill_(value)

    directory = copy_with_weights(hf_model_dir, tmp_path / "m", damage)
    hidden = json.loads((directory / "config.json").read_text())["hidden_size"]
    assert abs(value) >= embedding_limit(hidden) > 1e16
    message = (f"tensor {name} holds {abs(value):.3g} (row {row}), past "
               f"{embedding_limit(hidden):.3g}, where the normalisation after the embeddings overflows float32")
    with pytest.raises(structsent.ModelFormatError, match=re.escape(message)):
        structsent.load(directory, device="cpu", backend=backend)


def test_large_but_normalisable_embeddings_load(hf_model_dir, tmp_path):
    from structsent.models.hf import embedding_limit

    hidden = json.loads((hf_model_dir / "config.json").read_text())["hidden_size"]
    limit = embedding_limit(hidden)

    def damage(state):
        state["bert.embeddings.word_embeddings.weight"][5].fill_(limit / 2)

    results = structsent.load(copy_with_weights(hf_model_dir, tmp_path / "m", damage), device="cpu")(["好评"])
    assert results[0].ok


@pytest.mark.slow  # a subprocess that loads torch and the model
def test_nan_weights_label_job_exits_3_with_a_one_line_error(nan_model_dir, tmp_path):

    source = tmp_path / "reviews.txt"
    source.write_text("好评\n差评\n", encoding="utf-8")
    proc = run_structsent("label", source, "-o", tmp_path / "out.jsonl", "--model", nan_model_dir, "--device", "cpu",
                          text=True, env={"STRUCTSENT_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("structsent: error: ") and "non-finite values (nan)" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("backend", ["torch", "auto"])  # auto on a CPU: the ONNX export, validated against torch
def test_weights_that_overflow_are_refused_by_the_warm_up_batch(tmp_path, hf_model_dir, backend, monkeypatch):
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "cache"))
    d = copy_with_weights(hf_model_dir, tmp_path / "m", overflowing_head)
    assert load_checkpoint(d).labels == ("负面", "正面")  # finite weights: the files themselves are fine
    with pytest.raises(structsent.ModelFormatError,
                       match=r"the weights give non-finite outputs \(.*\) on a warm-up batch of 3 short texts \(torch, fp32, cpu\)"):
        structsent.load(d, device="cpu", backend=backend)
    assert not list((tmp_path / "cache").glob("onnx/*/model.onnx"))  # nothing unusable left in the cache


def test_onnx_model_that_gives_nan_is_refused_at_load(tmp_path, hf_model_dir):
    from structsent.config import Precision
    from structsent.onnx.export import ExportOptions, export_checkpoint

    d = copy_with_weights(hf_model_dir, tmp_path / "m", overflowing_head)
    export_checkpoint(load_checkpoint(d), tmp_path / "onnx", ExportOptions(precision=Precision.FP32, optimize=False))
    with pytest.raises(structsent.ModelFormatError,
                       match=r"onnx: the weights give non-finite outputs \(.*\) on a warm-up batch .*\(onnx, fp32, cpu\)"):
        structsent.load(tmp_path / "onnx")


# -- malformed config.json values -----------------------------------------------------------------
def with_config(src, dst, **changes):
    d = copy_dir(src, dst)
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config, ensure_ascii=False))
    return d


@pytest.mark.parametrize("changes,message", [
    (dict(num_hidden_layers="two"), r"num_hidden_layers must be a positive integer, got 'two'"),
    (dict(num_hidden_layers=2.0), r"num_hidden_layers must be a positive integer, got 2.0"),
    (dict(num_attention_heads=0), r"num_attention_heads must be a positive integer, got 0"),
    (dict(hidden_size=None), r"hidden_size must be a positive integer, got None"),
    (dict(intermediate_size=True), r"intermediate_size must be a positive integer, got True"),
    (dict(layer_norm_eps="tiny"), r"layer_norm_eps must be a positive number, got 'tiny'"),
    (dict(hidden_act=["gelu"]), r"hidden_act must be a string, got \['gelu'\]"),
    (dict(hidden_act="swish"), r"hidden_act='swish' is not supported"),
    (dict(num_attention_heads=5), r"hidden_size 32 is not divisible by num_heads 5"),
    (dict(id2label=["负面", "正面"]), r"id2label must map ids to label names, e.g. .*; got a list"),
    (dict(id2label={"neg": "负面", "pos": "正面"}), r"id2label must map integer ids to label names.*got 'neg': '负面'"),
    (dict(id2label={"0": "负面", "1": 1}), r"id2label must map integer ids to label names.*got '1': 1"),
    (dict(id2label={"0": "负面", "1": "中性", "2": "正面"}),
     r"id2label names 3 labels but the classifier has 2 outputs; the labels and the weights come from different models"),
    (dict(id2label={"1": "负面", "2": "正面"}), r"id2label ids must be 0..1, got \[1, 2\]"),
    (dict(id2label={"0": "好", "1": "好"}), r"id2label gives two outputs the same name"),
    (dict(num_labels=3), r"num_labels is 3 but the classifier has 2 outputs"),
    (dict(num_labels="2"), r"num_labels must be a positive integer, got '2'"),
    # were loaded: every text got the same answer (the head's bias), or softmax labels from sigmoid outputs
    (dict(layer_norm_eps=1e300), r"layer_norm_eps is 1e\+300: above 0.01 it flattens every hidden state"),
    (dict(problem_type="multi_label_classification"), r"problem_type is 'multi_label_classification'; structsent gives"),
    (dict(problem_type="regression"), r"problem_type is 'regression'"),
], ids=["layers-word", "layers-float", "heads-zero", "hidden-null", "intermediate-bool", "eps-word",
        "act-list", "act-unknown", "heads-indivisible", "id2label-list", "id2label-word-keys",
        "id2label-int-name", "id2label-3-on-2", "id2label-ids-1-2", "id2label-duplicate", "num_labels-3",
        "num_labels-word", "eps-huge", "multi-label", "regression"])
def test_malformed_config_values_are_model_format_errors(tmp_path, hf_model_dir, changes, message):
    d = with_config(hf_model_dir, tmp_path / "m", **changes)
    with pytest.raises(structsent.ModelFormatError, match=r"config.json: " + message):
        structsent.load(d, device="cpu")
    with pytest.raises(structsent.ModelFormatError, match=str(d)):
        structsent.load(d, device="cpu")


def test_accepted_config_values_at_their_bounds_load(tmp_path, hf_model_dir):
    for changes in (dict(layer_norm_eps=1e-2), dict(problem_type="single_label_classification"), dict(problem_type=None)):
        assert structsent.load(with_config(hf_model_dir, tmp_path / str(len(list(tmp_path.iterdir()))), **changes),
                               device="cpu")(["好"])[0].ok


def test_weights_that_are_not_floating_point_are_refused(tmp_path, hf_model_dir):
    """An int64 tensor in place of a weight was loaded (its values used as numbers)."""
    from safetensors.torch import load_file, save_file

    d = copy_dir(hf_model_dir, tmp_path / "m")
    (weights,) = d.glob("*.safetensors")
    tensors = load_file(weights)
    name = next(n for n in tensors if n.endswith("attention.output.dense.weight"))
    tensors[name] = tensors[name].view(torch.int32)
    save_file(tensors, weights)
    with pytest.raises(structsent.ModelFormatError, match=rf"tensor .*{name}.* holds int32 values, not floating-point"):
        structsent.load(d, device="cpu")


def test_a_label_name_holding_a_lone_surrogate_escape_is_refused_at_load(tmp_path, hf_model_dir):
    """Valid JSON ("\\ud800"), but no character: every output of a job failed with a UnicodeEncodeError
    traceback after the load (the ONNX export too, writing its config.json)."""
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {"0": "负面", "1": "\ud800"}
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")  # ASCII: the escape as written
    with pytest.raises(structsent.ModelFormatError, match=r"config.json: id2label names label 1 '\\ud800', which "
                                                          r"holds a lone UTF-16 surrogate escape, not a character"):
        structsent.load(d, device="cpu")


def test_label_mapping_that_does_not_fit_the_classifier(tmp_path, modelscope_dirs):
    d = copy_dir(modelscope_dirs["encoder"], tmp_path / "m")
    (d / "label_mapping.json").write_text(json.dumps({"负面": 0, "中性": 1, "正面": 2}, ensure_ascii=False))
    with pytest.raises(structsent.ModelFormatError,
                       match=r"label_mapping.json: the label mapping names 3 labels but the classifier has 2 outputs"):
        structsent.load(d, device="cpu")
    (d / "label_mapping.json").write_text(json.dumps({"负面": 0, "正面": 0}, ensure_ascii=False))
    with pytest.raises(structsent.ModelFormatError, match=r"label_mapping.json: two labels share one id"):
        structsent.load(d, device="cpu")


@pytest.fixture(scope="module")
def onnx_model_dir(tmp_path_factory, hf_model_dir):
    from structsent.config import Precision
    from structsent.onnx.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "m"
    export_checkpoint(load_checkpoint(hf_model_dir), out, ExportOptions(precision=Precision.FP32, optimize=False))
    return out


@pytest.mark.parametrize("changes,message", [
    (dict(num_hidden_layers="two"), r"config.json: num_hidden_layers must be a positive integer, got 'two'"),
    (dict(id2label=["负面", "正面"]), r"config.json: id2label must map ids to label names"),
    (dict(num_labels=3, id2label={"0": "负面", "1": "中性", "2": "正面"}),
     r"config.json: num_labels is 3 but the graph model.onnx gives 2 outputs per text; config.json belongs to another "
     r"export"),
], ids=["size", "id2label-list", "labels-vs-graph"])
def test_malformed_onnx_config_values_are_model_format_errors(tmp_path, onnx_model_dir, changes, message):
    d = with_config(onnx_model_dir, tmp_path / "m", **changes)
    with pytest.raises(structsent.ModelFormatError, match=message):
        structsent.load(d)


@pytest.mark.parametrize(("labels", "refused", "why"), [
    ({"0": "a\x1b[31m", "1": "正面"}, "'a\\x1b[31m'", "holds a control character"),
    ({"0": "负面", "1": "b\nc"}, "'b\\nc'", "holds a control character"),
    ({"0": "负\t面", "1": "正面"}, "'负\\t面'", "holds a control character (U+0009)"),
    ({"0": " ", "1": "正面"}, "' '", "is blank"),
    ({"0": "负面", "1": "\u3000"}, "'\\u3000'", "is blank"),
    ({"0": "负面\u2028", "1": "正面"}, "'负面\\u2028'", "holds a character that does not print (U+2028)"),
    ({"0": "负面", "1": "\u202e面正"}, "'\\u202e面正'", "holds a character that does not print (U+202E)"),
    ({"0": "\u200b", "1": "正面"}, "'\\u200b'", "holds a character that does not print (U+200B)"),
    ({"0": "负\x85面", "1": "正面"}, "'负\\x85面'", "holds a control character (U+0085)"),
])
def test_a_label_name_that_cannot_be_printed_or_be_a_column_name_is_refused_at_load(tmp_path, hf_model_dir, labels,
                                                                                  refused, why):
    """ESC and a line break in id2label reached the terminal raw in the job's summary (recolouring
    it, splitting the line) and split the CSV header; a blank name labelled rows with nothing."""
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = labels
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError) as caught:
        structsent.load(d, device="cpu")
    assert "id2label names label " in str(caught.value) and f"{refused}, which {why}" in str(caught.value)


def test_a_label_mapping_with_control_characters_is_refused_too(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config.pop("id2label", None), config.pop("label2id", None)
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (d / "label_mapping.json").write_text(json.dumps({"\x1b[2J": 0, "\r": 1}), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match=r"label_mapping.json: the label mapping names label 0 "
                                                          r"'\\x1b\[2J', which holds a control character"):
        structsent.load(d, device="cpu")


def test_label_ids_are_ascii_digits(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {"٠": "负面", "1": "正面"}  # an Arabic-Indic zero was read as 0
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match="id2label must map integer ids to label names"):
        structsent.load(d, device="cpu")


def test_a_model_whose_outputs_do_not_depend_on_the_text_is_said_at_load(hf_model_dir, tmp_path, caplog):
    """All-zero weights loaded without a word and labelled every text 负面 0.500 (the tie to label 0)."""
    def zero(state):
        for tensor in state.values():
            tensor.zero_()

    with caplog.at_level("WARNING", logger="structsent.engine"):
        clf = structsent.load(copy_with_weights(hf_model_dir, tmp_path / "zero", zero), device="cpu")
    assert "the model gives every warm-up text the same outputs [0.0, 0.0]: its weights look zeroed" in caplog.text
    assert [r.label for r in clf(["好评", "差评"])] == [clf.labels[0]] * 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="structsent.engine"):
        structsent.load(hf_model_dir, device="cpu")
    assert "same outputs" not in caplog.text
