"""Hugging Face directories: weights, config.json and vocabulary must describe one model."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import structsent
from structsent.models import load_checkpoint

from ..conftest import make_hf_model, write_tokenizer_files


def copy_model(src, tmp_path):
    return shutil.copytree(src, tmp_path / "m")


def edit_weights(directory, edit):
    path = directory / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_config_declaring_fewer_layers_than_the_weights_hold_is_refused(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(d)
    message = str(caught.value)
    assert "encoder layer 1 (tensors bert.encoder.layer.1." in message
    assert "num_hidden_layers=1" in message and "\n" not in message


def test_encoder_tensor_the_model_would_not_use_is_refused(tmp_path, hf_model_dir):
    # e.g. relative position embeddings: ignoring them would change every output
    d = copy_model(hf_model_dir, tmp_path)
    edit_weights(d, lambda s: s.update({"bert.encoder.layer.0.attention.self.distance_embedding.weight":
                                        torch.zeros(1023, 8)}))
    with pytest.raises(structsent.ModelFormatError,
                       match=r"tensor bert.encoder.layer.0.attention.self.distance_embedding.weight not used"):
        load_checkpoint(d)


def test_tensor_outside_the_encoder_and_the_head_is_refused(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)
    edit_weights(d, lambda s: s.update({"teacher.dense.weight": torch.zeros(2, 2)}))
    with pytest.raises(structsent.ModelFormatError, match=r"tensor teacher.dense.weight belong to neither the encoder"):
        load_checkpoint(d)


def test_pretraining_heads_and_index_buffers_are_ignored(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)

    def add_extras(state):
        state["cls.predictions.bias"] = torch.zeros(21128)
        state["cls.predictions.transform.dense.weight"] = torch.zeros(32, 32)
        state["cls.seq_relationship.weight"] = torch.zeros(2, 32)
        state["bert.embeddings.position_ids"] = torch.arange(512)[None]
        state["bert.embeddings.token_type_ids"] = torch.zeros(1, 512, dtype=torch.long)

    edit_weights(d, add_extras)
    assert load_checkpoint(d).shape.num_layers == 2


def test_modelscope_layouts_still_load(modelscope_dirs):
    for layout in ("encoder", "bert"):
        assert load_checkpoint(modelscope_dirs[layout]).shape.num_layers == 2


@pytest.mark.parametrize("value", ["big", -1, 0, 2.5, True, None])
def test_a_vocab_size_of_the_wrong_type_is_refused_as_every_other_field(tmp_path, hf_model_dir, value):
    """It was never read (the embedding's rows are the vocabulary's size), so "big" loaded."""
    d = copy_model(hf_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = value
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError, match="vocab_size must be a positive integer"):
        load_checkpoint(d)


def test_a_modelscope_directory_without_config_json_says_what_it_needs(tmp_path, modelscope_dirs):
    """It said only "config.json: missing", beside a configuration.json that looks like one."""
    d = copy_model(modelscope_dirs["bert"], tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(structsent.ModelFormatError, match=r"config.json: missing; a ModelScope model directory holds "
                                                          r"configuration.json .* and config.json"):
        load_checkpoint(d)


def test_vocabulary_much_smaller_than_the_embeddings_is_refused(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)
    lines = (d / "vocab.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "vocab.txt").write_text("".join(lines[:500]), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError,
                       match=r"the tokenizer has 49\d tokens but the embedding matrix 21128 rows \(padding up to "
                             r"a multiple of 128, 512, is allowed\)"):
        load_checkpoint(d)


def test_a_token_repeated_at_the_end_of_vocab_txt_is_refused_at_load(tmp_path, hf_model_dir):
    """A repeated token takes the id of its last line (as the reference tokenizer reads it): here
    21128, one past the embedding rows. Counting distinct tokens (21128) let it load, and the first
    text holding that character failed in the middle of a job with an IndexError."""
    d = copy_model(hf_model_dir, tmp_path)
    with open(d / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("好\n")
    with pytest.raises(structsent.ModelFormatError, match="ids go up to 21128 but the embedding matrix has only 21128"):
        load_checkpoint(d)


def test_a_tokenizer_json_that_skips_ids_is_refused_at_load(tmp_path, hf_model_dir):
    from tokenizers import Tokenizer as RustTokenizer

    d = copy_model(hf_model_dir, tmp_path)
    backend = load_checkpoint(d).tokenizer._backend
    data = json.loads(backend.to_str())
    data["model"]["vocab"]["好"] = 30000
    (d / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert RustTokenizer.from_file(str(d / "tokenizer.json")).token_to_id("好") == 30000
    with pytest.raises(structsent.ModelFormatError, match="ids go up to 30000 but the embedding matrix has only 21128"):
        load_checkpoint(d)


@pytest.mark.parametrize("rows,loads", [(21248, True), (21249, False)])
def test_embeddings_padded_to_a_multiple_of_128_load(tmp_path, rows, loads):
    make_hf_model(vocab_size=rows).save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)  # 21128 tokens: 21248 is the next multiple of 128
    if loads:
        assert load_checkpoint(tmp_path).shape.vocab_size == rows
    else:
        with pytest.raises(structsent.ModelFormatError, match="21128 tokens but the embedding matrix 21249 rows"):
            load_checkpoint(tmp_path)


@pytest.mark.parametrize("index", [{}, {"weight_map": []}, {"weight_map": {}}, {"weight_map": {"w": 5}},
                                   {"weight_map": {"w": "../elsewhere/model.safetensors"}}, [1]])
def test_a_damaged_shard_index_is_a_one_line_model_format_error(tmp_path, hf_model_dir, index):
    d = copy_model(hf_model_dir, tmp_path)
    (d / "model.safetensors").unlink()  # the index is read only where no whole weight file is
    (d / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(structsent.ModelFormatError,
                       match="model.safetensors.index.json: (.*the index is damaged|expected a JSON object)"):
        load_checkpoint(d)


def test_a_shard_that_is_not_a_regular_file_is_refused_not_waited_on(tmp_path, hf_model_dir):
    """A shard index naming a named pipe hung the load for ever (the open waited for a writer)."""
    import contextlib
    import os
    import threading

    d = copy_model(hf_model_dir, tmp_path)
    (d / "model.safetensors").rename(d / "real.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "shard.safetensors"}}),
                                                    encoding="utf-8")
    os.mkfifo(d / "shard.safetensors")

    def unblock_a_reader() -> None:  # so that a regression fails here instead of hanging the suite
        with contextlib.suppress(OSError):
            os.close(os.open(d / "shard.safetensors", os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(10, unblock_a_reader)
    timer.start()
    try:
        with pytest.raises(structsent.ModelFormatError, match=r"shard.safetensors: not a regular file \(a named pipe\)"):
            load_checkpoint(d)
    finally:
        timer.cancel()


def test_a_whole_weight_file_is_read_before_a_stale_shard_index_beside_it(tmp_path, hf_model_dir):
    """Both there: the shards were read, transformers reads model.safetensors (opposite labels seen)."""
    from safetensors.torch import load_file, save_file

    d = copy_model(hf_model_dir, tmp_path)
    stale = {name: tensor + 1.0 for name, tensor in load_file(d / "model.safetensors").items()}
    save_file(stale, d / "stale-00001-of-00001.safetensors", metadata={"format": "pt"})
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {name: "stale-00001-of-00001.safetensors" for name in stale}}), encoding="utf-8")
    loaded = load_checkpoint(d).state_dict
    reference = load_checkpoint(hf_model_dir).state_dict
    assert all(torch.equal(loaded[name], reference[name]) for name in reference)


def test_a_one_output_regression_head_is_refused(tmp_path):
    model = make_hf_model(num_labels=1)
    d = tmp_path / "regression"
    model.save_pretrained(d)
    write_tokenizer_files(d)
    with pytest.raises(structsent.ModelFormatError, match="the classifier has 1 output; labelling needs"):
        load_checkpoint(d)


def test_an_id_given_twice_in_id2label_is_refused(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["id2label"] = {"0": "负面", "1": "正面", " 1": "好"}
    (d / "config.json").write_text(json.dumps(config, ensure_ascii=False))
    with pytest.raises(structsent.ModelFormatError, match="gives id 1 twice"):
        load_checkpoint(d)


@pytest.mark.parametrize("name", [None, 5, b"default"])
def test_a_model_named_by_something_other_than_a_string_or_path_is_a_one_line_error(name):
    with pytest.raises(structsent.ModelNotFoundError, match="the model must be named by a string or a path, got"):
        structsent.load(name)


def test_architectures_that_is_not_a_list_is_read_as_none(tmp_path, hf_model_dir):
    d = copy_model(hf_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "xlnet", "architectures": 5}))
    with pytest.raises(structsent.ModelFormatError, match="model_type 'xlnet' is not supported"):
        load_checkpoint(d)


@pytest.mark.parametrize("shape", [(32,), ()])
def test_word_embeddings_of_another_rank_are_refused(tmp_path, hf_model_dir, shape):
    d = copy_model(hf_model_dir, tmp_path)
    tensors = load_file(d / "model.safetensors")
    tensors["bert.embeddings.word_embeddings.weight"] = torch.zeros(shape)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(structsent.ModelFormatError, match=r"word_embeddings.weight has shape .*not \(rows, columns\)"):
        load_checkpoint(d)


def test_a_model_of_fewer_than_three_positions_is_a_model_format_error(tmp_path):
    """It was refused as if the user had passed --max-length 2 (a ConfigError, exit 2), after a
    warning that the default 512 was more than the model's 2 positions."""
    make_hf_model(max_position_embeddings=2).save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)
    with pytest.raises(structsent.ModelFormatError, match=r"config.json: max_position_embeddings is 2: .* needs 3"):
        load_checkpoint(tmp_path)
    make_hf_model(max_position_embeddings=3).save_pretrained(tmp_path)  # the fewest it can read
    assert structsent.load(str(tmp_path), backend="torch")(["好"])[0].ok


def test_a_model_path_holding_a_nul_character_is_model_not_found():
    with pytest.raises(structsent.ModelNotFoundError, match="cannot hold a NUL character"):
        load_checkpoint("models/a\x00b")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "loop"])
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"])
def test_a_model_file_that_is_not_a_regular_file_is_refused_by_name(tmp_path, hf_model_dir, name, kind):
    """They were called missing ("no vocab.txt or tokenizer.json; copy the tokenizer files...") or,
    for tokenizer_config.json, skipped: the defaults were used in silence. Never opened: a named
    pipe would wait for a writer for ever."""
    from ..test_model_files import place

    d = copy_model(hf_model_dir, tmp_path)
    (d / name).unlink()
    place(kind, d / name)
    with pytest.raises(structsent.ModelFormatError, match=rf"/{name}: not a regular file \(") as caught:
        load_checkpoint(d)
    assert "\n" not in str(caught.value)


def test_a_tokenizer_config_that_is_a_pipe_exits_3_with_one_line(tmp_path, hf_model_dir):
    import os

    from ..conftest import run_structsent

    d = copy_model(hf_model_dir, tmp_path)
    (d / "tokenizer_config.json").unlink()
    os.mkfifo(d / "tokenizer_config.json")
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    proc = run_structsent("label", source, "-o", tmp_path / "out.jsonl", "--model", d, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"structsent: error: {d / 'tokenizer_config.json'}: not a regular file (a named pipe)\n"
