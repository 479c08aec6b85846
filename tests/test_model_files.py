"""model_files: a model file is a regular file, absent, or refused for what lies at its name."""

import os

import pytest

import structsent
from structsent.model_files import model_file_present


def test_a_regular_file_is_present_and_nothing_is_absent(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(tmp_path / "vocab.txt")  # hub caches link snapshots to blobs
    assert model_file_present(tmp_path / "vocab.txt") and model_file_present(tmp_path / "link.txt")
    assert not model_file_present(tmp_path / "tokenizer.json")


def place(kind: str, path) -> None:
    """Something that is not a regular file at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "loop":
        path.symlink_to(path.name)
    else:  # "dangling"
        path.symlink_to(path.parent / "gone")


@pytest.mark.parametrize("kind, says", [("fifo", "a named pipe"), ("directory", "a directory"),
                                        ("device", "a character device"), ("loop", "a loop of symbolic links"),
                                        ("dangling", "a link to a file that does not exist")])
def test_anything_else_is_refused_naming_what_it_is(tmp_path, kind, says):
    place(kind, tmp_path / "vocab.txt")
    with pytest.raises(structsent.ModelFormatError) as caught:
        model_file_present(tmp_path / "vocab.txt")
    assert str(caught.value) == f"{tmp_path / 'vocab.txt'}: not a regular file ({says})"
