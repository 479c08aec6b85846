"""A server's life: loading, a failing batch, a full queue, a vanished client, SIGTERM.

One server process with injected faults (tests/server/fault_server.py) serves the whole module,
in order: the last test stops it.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import pytest

from .conftest import ServerProcess, metric
from .fault_server import POISON

MAX_WAIT_S = 0.8


@pytest.fixture(scope="module")
def faulty(hf_model_dir):
    process = ServerProcess(
        hf_model_dir,
        "--max-wait-ms", str(MAX_WAIT_S * 1000),
        "--max-queue", "4",
        "--max-texts", "4",
        fault_load_delay_s=2.0,
    )
    try:
        yield process
    finally:
        process.close()


def post(server, texts):
    return server.client.post("/v1/sentiment", json={"texts": texts})


def wait_for_queue_depth(server, depth: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(server.metrics(), "structsent_queue_depth") == depth:
            return
        time.sleep(0.02)
    raise AssertionError(f"queue depth never reached {depth}")


def test_health_is_503_until_the_model_is_loaded(faulty):
    faulty.wait_listening()
    loading = faulty.client.get("/health")
    assert loading.status_code == 503
    assert loading.json() == {"error": "the model is loading", "error_type": "unhealthy"}
    refused = post(faulty, ["还没好"])
    assert refused.status_code == 503 and refused.json()["error_type"] == "unhealthy"
    assert faulty.client.get("/info").json()["ready"] is False
    faulty.wait_healthy()
    assert faulty.client.get("/info").json()["ready"] is True


def test_a_failing_batch_fails_only_its_requests_and_the_worker_lives_on(faulty):
    alone = post(faulty, [f"{POISON}餮"])
    assert alone.status_code == 500
    assert alone.json()["error_type"] == "backend" and "injected fault" in alone.json()["error"]
    # Poison merged with innocent requests: every waiter of that batch hears of the failure.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        merged = list(pool.map(lambda t: post(faulty, [t]), [POISON, "好吃", "难吃", "一般"]))
    assert [r.status_code for r in merged] == [500, 500, 500, 500]
    after = post(faulty, ["好吃", "难吃"])
    assert after.status_code == 200 and all(r["label"] for r in after.json()["results"])
    assert faulty.client.get("/health").status_code == 200
    samples = faulty.metrics()
    assert metric(samples, "structsent_failed_batches_total") == 2
    assert metric(samples, "structsent_errors_total", error_type="backend") == 5


def test_a_full_queue_answers_429_with_retry_after_and_accepts_nothing(faulty):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, faulty, ["一", "二", "三", "四"])
        wait_for_queue_depth(faulty, 4)  # waiting out the merge window
        refused = post(faulty, ["五"])
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error_type"] == "overloaded" and "max_queue" in refused.json()["error"]
        assert metric(faulty.metrics(), "structsent_queue_depth") == 4  # nothing of it was queued
        assert first.result(10).status_code == 200
    assert post(faulty, ["五"]).status_code == 200


def test_a_disconnected_request_is_dropped_before_computing(faulty):
    before = faulty.metrics()
    body = json.dumps({"texts": ["走了"]}).encode()
    with socket.create_connection(("127.0.0.1", faulty.port)) as sock:
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_for_queue_depth(faulty, 1)
    time.sleep(MAX_WAIT_S + 0.3)  # past the merge window: it would have run by now
    after = faulty.metrics()
    assert metric(after, "structsent_queue_depth") == 0
    assert metric(after, "structsent_batch_size_count") == metric(before, "structsent_batch_size_count")
    assert metric(after, "structsent_texts_total") == metric(before, "structsent_texts_total")


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly(faulty):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, faulty, ["最后一个", "请求"])
        wait_for_queue_depth(faulty, 2)
        faulty.process.terminate()  # SIGTERM
        response = in_flight.result(15)
    assert response.status_code == 200
    assert [r["error"] for r in response.json()["results"]] == [None, None]
    assert faulty.process.wait(15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{faulty.url}/health", timeout=2)
