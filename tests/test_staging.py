"""Staging names carry their process: what a process leaves is removed by the right one."""

from __future__ import annotations

import socket

from structsent.staging import remove_abandoned, remove_own, staging_name


def test_remove_own_removes_this_process_staging_only(tmp_path):
    """A process that ends at once (os._exit) removes its own staging, never another live process's."""
    own = tmp_path / (staging_name(".export-") + "ab12")
    own.mkdir()
    (own / "model.onnx").write_bytes(b"half")
    others = tmp_path / f".export-{socket.gethostname()}-1-cd34"  # pid 1: alive, not this process
    others.mkdir()
    unrelated = tmp_path / "kept"
    unrelated.mkdir()
    remove_own(tmp_path, ".export-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([others.name, "kept"])
    remove_abandoned(tmp_path, ".export-")  # its process runs: kept
    assert others.exists()
