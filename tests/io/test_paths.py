"""Output path checks: an output the job would rename onto must be a regular file."""

import os
from pathlib import Path

import pytest

from structsent.errors import BadInputError
from structsent.io.paths import check_output_is_a_file


def test_a_named_pipe_or_a_link_to_one_is_refused(tmp_path):
    fifo, link = tmp_path / "fifo", tmp_path / "link"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    for path in (fifo, link):
        with pytest.raises(BadInputError, match="is a named pipe; name a regular file"):
            check_output_is_a_file(path)


def test_a_character_device_is_refused():
    with pytest.raises(BadInputError, match="/dev/null: is a character device"):
        check_output_is_a_file(Path("/dev/null"))


def test_absent_paths_regular_files_and_links_to_them_pass(tmp_path):
    regular, link = tmp_path / "out.csv", tmp_path / "link.csv"
    regular.write_text("x")
    link.symlink_to(regular)
    for path in (tmp_path / "absent.csv", regular, link, tmp_path / "dangling"):
        check_output_is_a_file(path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    check_output_is_a_file(tmp_path / "dangling")
