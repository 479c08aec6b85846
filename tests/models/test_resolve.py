"""Turning what a user typed into a model directory, and reading weight files."""

import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest

import structsent
from structsent.models import load_checkpoint


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_model_name_is_refused_as_a_usage_error(name, tmp_path, monkeypatch, hf_model_dir):
    """A ConfigError, as a blank setting is: it was a ModelNotFoundError (exit 3, "model not found")."""
    for item in hf_model_dir.iterdir():  # a loadable model in the current directory must not be picked up
        shutil.copy(item, tmp_path / item.name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(structsent.ConfigError, match="the model name is empty"):
        load_checkpoint(name)


@pytest.mark.parametrize("name, says", [("a" * 300, "File name too long"), ("loop", "Too many levels of symbolic links")])
def test_a_model_path_that_cannot_be_looked_at_is_model_not_found(name, says, tmp_path, monkeypatch):
    """A path part over 255 bytes was a bare OSError (a traceback, exit 1, from the command line)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(structsent.ModelNotFoundError, match=f"cannot be looked at as a model directory .*{says}"):
        load_checkpoint(name)


class RunsCode:
    """Unpickled by a loader that runs what a pickle names, it would touch ``path``."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_pickle_that_names_code_is_refused_naming_what_it_names_and_nothing_runs(tmp_path, hf_model_dir):
    """torch's message advised re-running with weights_only=False (which runs that code) and hid
    the reason; the file was called corrupt ("download it again")."""
    import torch

    d = shutil.copytree(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    ran = tmp_path / "ran"
    torch.save({"classifier.bias": torch.zeros(2), "x": RunsCode(ran)}, d / "pytorch_model.bin")
    with pytest.raises(structsent.ModelFormatError) as caught:
        load_checkpoint(d)
    message = str(caught.value)
    assert "pytorch_model.bin: not a plain PyTorch state dict: it names posix.system, code rather than tensors" \
        in message
    assert "weights_only" not in message and "add_safe_globals" not in message and "download it again" not in message
    assert "\n" not in message and not ran.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_a_plain_pickle_that_names_code_says_so_and_nothing_runs(tmp_path, hf_model_dir, protocol):
    """pickle.dump's file (not torch.save's) was called corrupt: "cannot read weights
    (UnpicklingError: Unsupported operand 149); ... download it again". Its opcodes are read by
    pickletools, never run."""
    d = shutil.copytree(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    ran = tmp_path / "ran"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"classifier.bias": [0.0], "x": RunsCode(ran)},
                                                       protocol=protocol))
    import warnings

    with warnings.catch_warnings(record=True) as warned, pytest.raises(structsent.ModelFormatError) as caught:
        warnings.simplefilter("always")
        load_checkpoint(d)
    assert [str(w.message) for w in warned] == []  # torch's "Detected pickle protocol 4 ... file an issue" was printed
    message = str(caught.value)
    assert "pytorch_model.bin: " in message and "it names posix.system, code rather than tensors" in message
    assert "download it again" not in message and "weights_only" not in message
    assert "\n" not in message and not ran.exists()


def test_a_plain_pickle_of_data_is_called_a_plain_pickle(tmp_path, hf_model_dir):
    d = shutil.copytree(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"classifier.bias": [0.0, 1.0]}))
    with pytest.raises(structsent.ModelFormatError, match=r"pytorch_model.bin: a plain pickle, not a PyTorch state "
                                                          r"dict \(torch.save's format\) or safetensors; save"):
        load_checkpoint(d)


@pytest.mark.parametrize("content,says", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",  # a clone without git-lfs
     "cannot read weights (UnpicklingError: Unsupported operand 118); the file is corrupt or truncated (or a Git LFS"),
    (b"this is not a pickle at all\n" * 10, "cannot read weights"),
], ids=["lfs-pointer", "text"])
def test_garbage_pytorch_bin_is_a_one_line_error(tmp_path, hf_model_dir, content, says):
    """torch's message (six lines) opens with advice to pass weights_only=False: never shown."""
    d = shutil.copytree(hf_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(structsent.ModelFormatError, match=f"pytorch_model.bin: {re.escape(says)}") as caught:
        load_checkpoint(d)
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_path_named_default_is_that_directory_and_only_the_string_is_the_bundled_model(tmp_path, monkeypatch,
                                                                                         hf_model_dir):
    """Path("default") and Path("./default") loaded the bundled model (str() of both is "default")."""
    from pathlib import Path

    from structsent.models import BUNDLED_MODEL_DIR, resolve_directory

    shutil.copytree(hf_model_dir, tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    assert resolve_directory(Path("default")) == Path("default")
    assert resolve_directory(Path("./default")) == Path("default")
    assert resolve_directory("./default") == Path("default")
    assert resolve_directory("default") == BUNDLED_MODEL_DIR
    shutil.rmtree(tmp_path / "default")  # with no such directory, the message says what names the bundled one
    with pytest.raises(structsent.ModelNotFoundError) as caught:
        resolve_directory(Path("default"))
    assert str(caught.value) == ("default: no such model directory; the bundled model is named by the string "
                                 "'default', not by a path")


def test_a_model_name_that_white_space_begins_or_ends_is_shown_quoted():
    """"structsent: error:  default: no such model directory": the space that made it no model was unseen."""
    from structsent.models import resolve_directory

    for name in (" default", "default\u3000", "my model "):
        with pytest.raises(structsent.ModelNotFoundError) as caught:
            resolve_directory(name)
        assert str(caught.value).startswith(f"{name!r}: no such model directory (pass 'default', ")
    with pytest.raises(structsent.ModelNotFoundError, match="^no-such-dir: no such model directory"):
        resolve_directory("no-such-dir")


@pytest.mark.parametrize("name", ["~no-such-user-x7/model", "~no-such-user-x7"])
def test_a_home_directory_that_cannot_be_found_is_a_one_line_error(name):
    """pathlib's bare RuntimeError("Could not determine home directory") came out as a traceback."""
    with pytest.raises(structsent.ConfigError, match="cannot expand '~'"):
        load_checkpoint(name)


def test_a_cache_directory_that_cannot_be_found_falls_back_as_an_unwritable_one(monkeypatch):
    from structsent.errors import OutputWriteError
    from structsent.onnx.cache import cache_root

    monkeypatch.setenv("STRUCTSENT_CACHE", "~no-such-user-x7/cache")
    with pytest.raises(OutputWriteError, match="no cache directory"):
        cache_root()


def test_a_config_that_is_not_an_engine_config_is_a_config_error():
    with pytest.raises(structsent.ConfigError, match="config=dict: expected an EngineConfig"):
        structsent.load("default", config={"device": "cpu"})


def test_a_path_like_object_names_a_model_as_its_path(hf_model_dir):
    """PurePosixPath and objects with __fspath__ were refused: "must be named by a string or a path"."""
    import pathlib

    class Named:
        def __fspath__(self) -> str:
            return str(hf_model_dir)

    for name in (pathlib.PurePosixPath(hf_model_dir), Named()):
        assert structsent.load(name, device="cpu")(["好"])[0].ok


def test_the_files_a_load_reads_are_those_of_the_format_it_takes(hf_model_dir, tmp_path):
    import shutil

    import torch

    from structsent.models import files_a_load_reads

    from ..conftest import sharded_copy

    plain = tmp_path / "plain"
    shutil.copytree(hf_model_dir, plain)
    (plain / "README.md").write_text("notes")
    torch.save({}, plain / "pytorch_model.bin")
    read = [p.relative_to(plain).as_posix() for p in files_a_load_reads(plain)]
    assert "model.safetensors" in read and "config.json" in read and "vocab.txt" in read
    assert "README.md" not in read and "pytorch_model.bin" not in read

    sharded = tmp_path / "sharded"
    sharded_copy(hf_model_dir, sharded)
    (sharded / "shards" / "notes.txt").write_text("not read")
    read = [p.relative_to(sharded).as_posix() for p in files_a_load_reads(sharded)]
    assert {"model.safetensors.index.json", "shards/part-1.safetensors"} <= set(read)
    assert "shards/notes.txt" not in read and read == sorted(read)


@pytest.mark.parametrize("command, env", [
    (["label", "in.txt", "-o", "out.jsonl", "--model", ""], {}),
    (["label", "in.txt", "-o", "out.jsonl"], {"STRUCTSENT_MODEL": ""}),
    (["export", "", "-o", "exported"], {}),
    (["bench", "--model", "", "--n", "10", "--out", "bench"], {}),
    (["serve", "--model", "", "--port", "42007"], {}),
])
def test_an_empty_model_name_is_a_usage_error_of_every_command(command, env, tmp_path):
    """`--model ''` exited 3, as a model not found."""
    (tmp_path / "in.txt").write_text("好评\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "structsent", *command], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "structsent: error: the model name is empty; pass 'default', a checkpoint directory (use '.' for the current "
        "one) or a hub id (--model / STRUCTSENT_MODEL)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
