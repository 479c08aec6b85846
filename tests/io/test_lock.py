"""structsent.io.lock: one writer per output, by a lock file beside it or on a directory itself."""

import os

import pytest

from structsent.errors import JobLockedError
from structsent.io.lock import DirectoryLock, OutputLock, lock_holder


def test_a_directory_lock_refuses_a_second_holder_until_the_first_lets_go(tmp_path):
    """For an output directory whose parent has no room for a lock file (not writable)."""
    first = DirectoryLock(tmp_path, "out", then="wait for it", job="structsent label job")
    with first:
        with pytest.raises(JobLockedError, match="^out: another structsent label job is writing this output; wait for it$"):
            with DirectoryLock(tmp_path, "out", then="wait for it", job="structsent label job"):
                pass
    with DirectoryLock(tmp_path, "out", then="wait for it", job="structsent label job"):
        pass  # released: taken again
    assert list(tmp_path.iterdir()) == []  # no file left in the directory


def test_an_output_lock_names_its_holder_and_what_to_do(tmp_path):
    path = tmp_path / "out.lock"
    with OutputLock(path, "out", then="write elsewhere", job="structsent label job"):
        with pytest.raises(JobLockedError, match=r"^out: another structsent label job \(PID \d+\) is writing this "
                                                 r"output; write elsewhere$"):
            OutputLock(path, "out", then="write elsewhere", job="structsent label job").acquire()
    assert not path.exists()


def test_lock_holder_names_the_process_holding_a_lock_and_takes_nothing(tmp_path):
    path = tmp_path / "out.lock"
    assert lock_holder(path) is None  # no file
    with OutputLock(path, "out"):
        assert lock_holder(path) == os.getpid()
        assert lock_holder(path) == os.getpid()  # asked twice: it took no lock of its own
    path.write_text("123\n")
    assert lock_holder(path) is None  # a file no process holds


def test_a_file_renamed_over_a_held_lock_is_not_removed_when_the_lock_is_released(tmp_path):
    """Another command's output renamed onto out.lock was deleted when the job let go of its lock."""
    path = tmp_path / "out.lock"
    with OutputLock(path, "out"):
        other = tmp_path / "other"
        other.write_text("someone's output\n")
        other.replace(path)
    assert path.read_text() == "someone's output\n"


def test_a_job_refused_by_one_writing_a_directory_is_not_told_to_resume_that_one(tmp_path):
    """A local job found a Ray job's lock (its output a directory) and was told "stop it and pass
    --resume", which that output cannot take; each is told to write elsewhere, in its own words."""
    path = tmp_path / "out.lock"
    with OutputLock(path, "out", then="wait for it to finish, or write to another directory", writes="directory"):
        with pytest.raises(JobLockedError, match=r"^out: another structsent label job \(PID \d+\) is writing this "
                                                 r"output; wait for it to finish, or write to another file$"):
            OutputLock(path, "out").acquire()
        with pytest.raises(JobLockedError, match="; wait for it to finish, or write to another directory$"):
            OutputLock(path, "out", then="wait for it to finish, or write to another directory", writes="directory").acquire()
        assert lock_holder(path) == os.getpid()
    with OutputLock(path, "out"):
        with pytest.raises(JobLockedError, match="; wait for it to finish, or stop it and pass --resume$"):
            OutputLock(path, "out").acquire()
        with pytest.raises(JobLockedError, match="; wait for it to finish, or write to another directory$"):
            OutputLock(path, "out", then="wait for it to finish, or write to another directory", writes="directory").acquire()
