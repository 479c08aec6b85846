"""Loading every supported format, and a clear typed error for every broken one."""

import json
import shutil

import pytest
import torch

import structsent
from structsent.models import load_checkpoint
from structsent.models.checkpoint import choose_labels

from .conftest import make_hf_model, write_tokenizer_files


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_hf_directory_loads_with_labels_from_id2label(hf_model_dir):
    ckpt = load_checkpoint(hf_model_dir)
    assert ckpt.format == "huggingface" and ckpt.labels == ("负面", "正面")
    assert ckpt.shape.num_layers == 2 and ckpt.shape.hidden_size == 32


def test_pytorch_bin_and_tokenizer_json_load(tmp_path, hf_model_dir, real_reviews):
    from transformers import BertTokenizer

    model = make_hf_model()  # the same weights as hf_model_dir (same seed)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.to_json_file(tmp_path / "config.json")
    write_tokenizer_files(tmp_path)
    BertTokenizer.from_pretrained(str(tmp_path)).save_pretrained(str(tmp_path))  # writes tokenizer.json
    (tmp_path / "vocab.txt").unlink()
    a = structsent.load(tmp_path, device="cpu")(real_reviews[:20])
    b = structsent.load(hf_model_dir, device="cpu")(real_reviews[:20])
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
    assert choose_labels({}, 3, tmp_path, structbert=True) == ("LABEL_0", "LABEL_1", "LABEL_2")
    (tmp_path / "label_mapping.json").write_text(json.dumps({"0": "差", "1": "中", "2": "好"}))
    assert choose_labels({}, 3, tmp_path, structbert=True) == ("差", "中", "好")


def test_sharded_safetensors_load(tmp_path, hf_model_dir, real_reviews):
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
    b = structsent.load(hf_model_dir, device="cpu")(real_reviews[:10])
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
    with pytest.raises(structsent.ModelFormatError, match="21128 tokens but the embedding matrix only 1000"):
        structsent.load(tmp_path)


def test_missing_vocabulary(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    (d / "vocab.txt").unlink()
    with pytest.raises(structsent.ModelFormatError, match="no vocab.txt or tokenizer.json"):
        structsent.load(d)


def test_config_and_weights_disagree(tmp_path, hf_model_dir):
    d = copy_dir(hf_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(structsent.ModelFormatError, match="missing tensor bert.encoder.layer.2"):
        structsent.load(d)


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
