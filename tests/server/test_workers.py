"""`--workers N`: N server processes, each with its own model, behind one port."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import children_of
from .conftest import ServerProcess

pytestmark = pytest.mark.slow  # real server processes



def test_two_workers_serve_the_same_answers_and_stop_together(hf_model_dir):
    single = ServerProcess(hf_model_dir).wait_healthy(120)
    try:
        texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了", "一般般吧"]
        expected = single.client.post("/v1/sentiment", json={"texts": texts}).json()["results"]
    finally:
        single.terminate()
    server = ServerProcess(hf_model_dir, "--workers", "2").wait_healthy(120)
    try:
        workers = [pid for pid in children_of(server.process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # not the resource tracker
        assert len(workers) == 2, (workers, server.log())
        for _ in range(12):  # a fresh connection each time, so either worker may answer
            results = post_on_a_fresh_connection(server, texts)
            assert [r["label"] for r in results] == [r["label"] for r in expected]
            for got, want in zip(results, expected):
                assert abs(got["score"] - want["score"]) < 1e-5
        assert server.terminate(60) == 0
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in workers)
    finally:
        server.close()


def post_on_a_fresh_connection(server, texts, timeout: float = 120) -> list[dict]:
    """The results; /health proved one worker ready, the other may still be loading (503)."""
    deadline = time.monotonic() + timeout
    while True:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/v1/sentiment", json={"texts": texts})
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()["results"]
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
