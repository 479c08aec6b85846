"""Turning what a user typed into a model directory, and reading weight files."""

import pickle
import shutil

import pytest

import structsent
from structsent.models import load_checkpoint


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_model_name_is_refused(name, tmp_path, monkeypatch, hf_model_dir):
    for item in hf_model_dir.iterdir():  # a loadable model in the current directory must not be picked up
        shutil.copy(item, tmp_path / item.name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(structsent.ModelNotFoundError, match="the model name is empty"):
        load_checkpoint(name)


@pytest.mark.parametrize("content,reason", [
    (pickle.dumps(print), "UnpicklingError: not a plain PyTorch state dict: Unsupported"),  # torch: 6 lines
    (b"this is not a pickle at all\n" * 10, "pytorch_model.bin: cannot read weights"),
], ids=["pickled-code", "text"])
def test_garbage_pytorch_bin_is_a_one_line_error(tmp_path, hf_model_dir, content, reason):
    d = shutil.copytree(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(structsent.ModelFormatError, match="pytorch_model.bin: cannot read weights") as caught:
        load_checkpoint(d)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
