"""Clients that are slow, idle, too many, without the API key, or send bodies no JSON parser
reads, against a real server process.

One server with a 1 s read deadline, a cap of 6 connections and an API key serves the module;
the tests at the end drive the HTTP protocol in-process, with a transport that records its output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from structsent.server.connections import GuardedHTTPProtocol
from structsent.server.middleware import ConnectionPolicy

from .conftest import ServerProcess, metric

pytestmark = pytest.mark.slow  # real server processes

API_KEY = "test-key-1b7e"
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 6
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def guarded(hf_model_dir):
    process = ServerProcess(
        hf_model_dir,
        "--read-timeout-s", str(READ_TIMEOUT_S),
        "--max-connections", str(MAX_CONNECTIONS),
        "--max-header-bytes", "4096",
        "--max-body-bytes", "300000",
        env={"STRUCTSENT_API_KEY": API_KEY},  # the key from the environment, as a deployment gives it
    )
    process.client.headers.update(AUTH)
    try:
        yield process.wait_healthy()
    finally:
        process.terminate()


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """One whole HTTP/1.1 response with a content-length: (status, headers, JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def assert_error_shape(body: dict, error_type: str, limit: str | None = None) -> None:
    assert body["error_type"] == error_type and isinstance(body["error"], str)
    if limit is None:
        assert set(body) == {"error", "error_type"}
    else:
        assert set(body) == {"error", "error_type", "limit", "limit_value"} and body["limit"] == limit


# -- the API key ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", API_KEY, f"Bearer {API_KEY}x"]
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/sentiment"), ("POST", "/predict"), ("GET", "/metrics"),
                                              ("GET", "/info"), ("POST", "/")])
def test_without_the_api_key_every_route_but_health_and_the_documentation_is_401(guarded, authorization, method, path):
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=guarded.url, timeout=10) as anonymous:
        response = anonymous.request(method, path, json={"texts": ["好"]}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error_shape(response.json(), "unauthorized")
        assert anonymous.get("/health").json() == {"status": "ok"}  # probes carry no key


@pytest.mark.parametrize("keys", [("Bearer wrong-key", f"Bearer {API_KEY}"), (f"Bearer {API_KEY}", "Bearer wrong-key"),
                                  (f"Bearer {API_KEY}", f"Bearer {API_KEY}")])
def test_two_authorization_headers_are_refused_whatever_they_hold(guarded, keys):
    # The first was read: right then wrong was let in, wrong then right refused.
    request = "POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
    request += "".join(f"Authorization: {key}\r\n" for key in keys) + '\r\n{"texts":["a"]}'
    with connect(guarded) as sock:
        sock.sendall(request.encode())
        status, headers, answer = read_response(sock)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert_error_shape(answer, "unauthorized")


def test_the_documentation_is_served_without_the_key_and_declares_it(guarded):
    with httpx.Client(base_url=guarded.url, timeout=10) as anonymous:
        assert anonymous.get("/docs").status_code == 200
        schema = anonymous.get("/openapi.json").json()
    assert schema["security"] == [{"apiKey": []}] and API_KEY not in json.dumps(schema)


def test_with_the_api_key_everything_is_served(guarded):
    assert guarded.client.post("/v1/sentiment", json={"texts": ["好"]}).status_code == 200
    lower_case = {"Authorization": f"bearer {API_KEY}"}  # the scheme is case-insensitive (RFC 7235)
    assert httpx.get(f"{guarded.url}/info", headers=lower_case).status_code == 200
    info = guarded.client.get("/info").text
    assert API_KEY not in info and API_KEY not in guarded.log()
    samples = guarded.metrics()
    assert metric(samples, "structsent_errors_total", error_type="unauthorized") >= 1


# -- bodies the JSON parser cannot read -------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"inputs": "\xff\xfe"}', "not valid UTF-8"),
        ('{"inputs": "好"}'.encode("utf-16"), "not valid UTF-8"),
        ('{"inputs": "好"}'.encode("utf-16-le"), "not valid UTF-8"),
        ('{"inputs": "好"}'.encode("utf-32-be"), "not valid UTF-8"),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"inputs": ' + b"7" * 5_000 + b"}", "too many digits"),
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/v1/sentiment"])
def test_undecodable_bodies_get_422_in_the_error_shape(guarded, content, fragment, path):
    response = guarded.client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert_error_shape(response.json(), "validation")
    assert "malformed JSON" in response.json()["error"] and fragment in response.json()["error"]


@pytest.mark.parametrize("compressed", [True, False])
def test_a_body_sent_with_a_content_encoding_gets_415(guarded, compressed):
    """A gzip body was "not valid UTF-8" (422); a plain body under the header was labelled as if
    the header were absent."""
    import gzip

    body = json.dumps({"texts": ["好吃"]}).encode()
    response = guarded.client.post("/v1/sentiment", content=gzip.compress(body) if compressed else body,
                                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 415
    assert_error_shape(response.json(), "validation")
    assert response.json()["error"] == "Content-Encoding: gzip is not accepted; send the body uncompressed"
    identity = guarded.client.post("/v1/sentiment", content=body,
                                   headers={"content-type": "application/json", "content-encoding": "identity"})
    assert identity.status_code == 200
    # Every Content-Encoding header is read (a gzip one after an identity one was labelled as plain text)
    for encodings in (["identity", "gzip"], ["identity, gzip"], ["", "identity", "GZIP"]):
        headers = [("content-type", "application/json"), *(("content-encoding", e) for e in encodings)]
        sneaked = guarded.client.post("/v1/sentiment", content=gzip.compress(body) if compressed else body,
                                      headers=headers)
        assert sneaked.status_code == 415, encodings
        assert sneaked.json()["error"].startswith(f"Content-Encoding: {encodings[-1].split(', ')[-1]} is not"), encodings


@pytest.mark.parametrize("coding", ["gzip, chunked", "br,chunked", "chunked, chunked"])
def test_a_body_sent_with_a_transfer_coding_other_than_chunked_gets_501(guarded, coding):
    """A plain body under `Transfer-Encoding: gzip, chunked` was labelled as if the coding were
    absent, a gzip one was "not valid UTF-8" (422)."""
    body = json.dumps({"texts": ["好吃"]}).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: {coding}\r\n\r\n".encode() + chunked
        )
        status, headers, answer = read_response(sock)
    if coding == "chunked, chunked":  # chunked twice is not HTTP (RFC 9112 6.1): the parser's 400
        assert status == 400
        return
    assert status == 501 and headers["connection"] == "close"
    assert_error_shape(answer, "validation")
    assert answer["error"].startswith(f"Transfer-Encoding: {coding.split(',')[0]} is not implemented")
    with connect(guarded) as sock:  # chunked alone is read
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked
        )
        status, headers, answer = read_response(sock)
    assert status == 200 and answer["results"][0]["label"] in ("正面", "负面")


def test_a_utf8_body_with_a_byte_order_mark_is_read(guarded):
    content = '\ufeff{"inputs": "好吃"}'.encode()
    response = guarded.client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()) == 2


# -- deadlines --------------------------------------------------------------------------------
def test_a_body_that_stalls_gets_408_within_the_deadline(guarded):
    body = json.dumps({"texts": ["慢慢来"]}).encode()
    with connect(guarded) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:-1]  # all but the last byte, forever
        )
        status, headers, answer = read_response(sock)
        waited = time.monotonic() - started
        assert closed_by_server(sock)
    assert status == 408 and headers["connection"] == "close"
    assert_error_shape(answer, "timeout", "read_timeout_s")
    assert answer["limit_value"] == READ_TIMEOUT_S
    assert READ_TIMEOUT_S - 0.1 <= waited < READ_TIMEOUT_S + 3


def test_a_body_that_trickles_gets_408_too(guarded):
    """Each byte arrives in time for a per-read timeout; the deadline is for the whole body."""
    body = json.dumps({"texts": ["一点一点"]}).encode()
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        sock.settimeout(0.2)
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(65536, socket.MSG_PEEK):
                    break  # answered
            except TimeoutError:
                pass
        sock.settimeout(10)
        status, _, answer = read_response(sock)
        assert time.monotonic() - started < READ_TIMEOUT_S + 3
    assert status == 408 and answer["limit"] == "read_timeout_s"


def test_headers_that_stall_get_408_and_idle_connections_are_closed(guarded):
    before = guarded.metrics()
    with connect(guarded) as idle, connect(guarded) as partial:
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: headers unfinished
        started = time.monotonic()
        status, headers, answer = read_response(partial)
        assert status == 408 and headers["connection"] == "close"
        assert_error_shape(answer, "timeout", "read_timeout_s")
        assert closed_by_server(idle)  # nothing to answer: closed without a word
        assert time.monotonic() - started < READ_TIMEOUT_S + 3
    # A keep-alive connection gets the same deadline again for its next request.
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        assert read_response(sock)[0] == 408
    # The two 408s as read_timeout_s; the connection that sent nothing apart, as idle (it was counted
    # among the 408s, which pooled sockets and TCP-only probes then swelled).
    after = guarded.metrics()
    added = {reason: metric(after, "structsent_refused_connections_total", reason=reason)
             - metric(before, "structsent_refused_connections_total", reason=reason)
             for reason in ("read_timeout_s", "idle")}
    assert added["read_timeout_s"] == 2 and added["idle"] >= 1  # (and any client's socket left idle meanwhile)


def test_an_asterisk_target_is_named_as_sent(guarded):
    # `OPTIONS *` (a server-wide request) was answered "Not Found: OPTIONS /*", a path never sent.
    with connect(guarded) as sock:
        sock.sendall(f"OPTIONS * HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode())
        status, _, answer = read_response(sock)
    assert status == 404 and answer["error"] == "Not Found: OPTIONS *"


def test_part_of_a_pipelined_request_sent_with_the_one_before_gets_408_not_a_silent_close(guarded):
    """The bytes came while the first request was in flight, and were not counted: at the deadline
    the connection looked idle and was closed without an answer."""
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea")
        assert read_response(sock)[0] == 200
        status, headers, answer = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert_error_shape(answer, "timeout", "read_timeout_s")


def test_a_pipelined_request_whose_body_stalls_gets_408_not_a_silent_close(guarded):
    """Its body, still arriving when the request before it was answered, was taken for a body left
    unread by that answer: at the deadline the connection was closed without an answer."""
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                     + f"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n".encode()
                     + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"{" * 50)
        assert read_response(sock)[0] == 200
        status, headers, answer = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert_error_shape(answer, "timeout", "read_timeout_s")


def test_an_unparsable_request_with_more_bytes_than_the_header_cap_in_its_read_gets_400(guarded):
    """Its headers were short, but every byte of the read (the requests after it) was counted as
    headers: 431 "request headers larger than max_header_bytes" instead of 400."""
    with connect(guarded) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n" + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 300)  # ~10 KB > 4096
        status, headers, answer = read_response(sock)
        assert status == 400 and headers["connection"] == "close"


@pytest.mark.parametrize(("method", "path", "answered"), [("GET", "/health", 200), ("DELETE", "/v1/sentiment", 405)])
def test_a_body_left_unread_by_an_early_answer_is_not_taken_for_the_next_headers(guarded, method, path, answered):
    """A request answered before its body came (a GET with a body, a 405): the body's bytes were
    counted as the next request's headers, which got a 431. (The rest of such a body has
    read_timeout_s from the answer: see the in-process tests at the end.)"""
    with connect(guarded) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                     "Content-Length: 100000\r\n\r\n".encode())
        assert read_response(sock)[0] == answered
        sock.sendall(b"x" * 60000)
        time.sleep(READ_TIMEOUT_S * 0.6)  # a pause in the body, within its deadline
        sock.sendall(b"x" * 40000 + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, answer = read_response(sock)
        assert status == 200 and answer == {"status": "ok"}


def test_unfinished_headers_over_the_cap_get_431(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 3000)
        time.sleep(0.2)  # a second read: the cap counts what has arrived without an end of headers
        sock.sendall(b"a" * 3000)
        status, _, answer = read_response(sock)
    assert status == 431
    assert_error_shape(answer, "validation", "max_header_bytes")
    assert answer["limit_value"] == 4096


@pytest.mark.parametrize("split_at", [None, -3, -1])
def test_whole_headers_over_the_cap_get_431_in_one_read_or_split_at_their_end(guarded, split_at):
    start = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: "
    request = start + b"a" * (4098 - len(start) - 4) + b"\r\n\r\n"  # 2 bytes over: no read alone is
    with connect(guarded) as sock:
        if split_at is None:
            sock.sendall(request)  # the end of the headers in the same read as the rest
        else:
            sock.sendall(request[:split_at])  # the end of the headers split between two reads
            time.sleep(0.2)
            sock.sendall(request[split_at:])
        status, _, answer = read_response(sock)
        assert closed_by_server(sock)
    assert status == 431
    assert_error_shape(answer, "validation", "max_header_bytes")


def test_headers_just_under_the_cap_with_a_body_in_the_same_read_are_served(guarded):
    body = json.dumps({"texts": ["好"] * 30}).encode()  # the body is not counted against the header cap
    head = (
        b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n".encode()
    )
    padding = b"X-Padding: " + b"a" * (4096 - len(head) - len(b"X-Padding: \r\n\r\n")) + b"\r\n"
    request = head + padding + b"\r\n"
    assert len(request) == 4096
    with connect(guarded) as sock:
        sock.sendall(request + body)
        status, _, answer = read_response(sock)
    assert status == 200 and len(answer["results"]) == 30


def test_an_unparsable_request_gets_400_in_the_error_shape(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, _, answer = read_response(sock)
    assert status == 400
    assert_error_shape(answer, "validation")


# -- the connection cap -----------------------------------------------------------------------
def test_connections_beyond_the_cap_get_503_and_the_server_stays_responsive(guarded):
    """Clients holding the cap's worth of connections, each with all of a large body but its
    last byte (the attack that held memory), and more idle sockets beyond the cap."""
    time.sleep(READ_TIMEOUT_S + 0.3)  # the deadline has closed the idle connections of earlier tests
    log_size = guarded.log_path.stat().st_size
    body_size = 150_000
    holders = []
    for _ in range(MAX_CONNECTIONS):
        sock = connect(guarded)
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {body_size}\r\n\r\n".encode()
            + b" " * (body_size - 1)
        )
        holders.append(sock)
    extra = [connect(guarded) for _ in range(40)]
    try:
        for sock in extra:  # answered and closed at once, before the deadline
            status, headers, answer = read_response(sock)
            assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
            assert_error_shape(answer, "overloaded", "max_connections")
            assert answer["limit_value"] == MAX_CONNECTIONS
        for sock in holders:  # the deadline frees the cap's connections and their memory
            assert read_response(sock)[0] == 408
            assert closed_by_server(sock)
    finally:
        for sock in holders + extra:
            sock.close()
    deadline = time.monotonic() + 10
    while guarded.client.post("/v1/sentiment", json={"texts": ["还在"]}).status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover after the deadline"
        time.sleep(0.1)
    samples = guarded.metrics()
    assert metric(samples, "structsent_refused_connections_total", reason="max_connections") >= 40
    assert metric(samples, "structsent_request_duration_seconds_count", endpoint="/v1/sentiment", status="408") >= 6
    # 40 refusals logged as a handful of lines (rate-limited), not 40
    grown = guarded.log_path.read_text(errors="replace")[log_size:]
    assert 1 <= grown.count("refused with 503") <= 10, grown


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_refused_over_the_cap_are_not_kept_open(guarded):
    """Each refused connection whose request had arrived was kept 2 s, lingering: 3,000 of them held
    2,998 descriptors, where the cap is there to bound them."""
    time.sleep(READ_TIMEOUT_S + 0.3)  # the deadline has closed the idle connections of earlier tests
    baseline = open_descriptors(guarded.process.pid)
    holders = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    refused = []
    try:
        time.sleep(0.2)
        for _ in range(40):
            sock = connect(guarded)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # sent, never read by the server
            refused.append(sock)
        for sock in refused:
            assert read_response(sock)[0] == 503
        time.sleep(0.3)
        held = open_descriptors(guarded.process.pid) - baseline
        assert held <= MAX_CONNECTIONS + 3, held  # the cap's connections, not the 40 refused
    finally:
        for sock in holders + refused:
            sock.close()


def test_clients_that_never_read_their_answers_cannot_hold_every_connection_slot(guarded):
    """Each pipelined large answers and read nothing: their connections were held for ever (no
    deadline covers an answer being sent), and the next client got 503 (max_connections)."""
    before = guarded.metrics()
    request = b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n" * 10  # ~17 MB of answers
    sockets = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", guarded.port))
            sock.sendall(request)
            sockets.append(sock)
        time.sleep(0.3)
        # Well before uvicorn's 5 s keep-alive timeout frees the slot of the metrics client
        deadline = time.monotonic() + 3.5 * READ_TIMEOUT_S
        while True:
            with httpx.Client(base_url=guarded.url, timeout=10) as other:
                try:
                    status = other.get("/health").status_code
                except httpx.TransportError:  # refused by the cap
                    status = 503
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        while True:  # and every one of them is dropped, not only the first
            dropped = metric(guarded.metrics(), "structsent_refused_connections_total", reason="unread_response")
            dropped -= metric(before, "structsent_refused_connections_total", reason="unread_response")
            if dropped >= MAX_CONNECTIONS - 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert dropped >= MAX_CONNECTIONS - 1  # (one slot may be the metrics client's: then one was a 503)
    finally:
        for sock in sockets:
            sock.close()


def test_a_client_that_pipelines_and_never_reads_is_reset_within_the_deadline(guarded):
    """The kernel's send queue, tuning itself up to megabytes, drained the server's buffer while the
    client read nothing: each deadline counted that as progress (dropped after 13-16 s with a 3 s
    deadline), and the drop was a close, the kernel still sending the ~4 MB it held."""
    before = guarded.metrics()
    sock = socket.create_connection(("127.0.0.1", guarded.port))
    try:
        sock.setblocking(False)
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 50
        pending, blocked_since, reset = request, None, False
        started = time.monotonic()
        while True:  # pipeline until the server stops reading (its answers are not taken)
            try:
                pending = pending[sock.send(pending):] or request
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.5:
                    break
                time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                reset = True
                break
        while time.monotonic() - started < 20 * READ_TIMEOUT_S:
            dropped = metric(guarded.metrics(), "structsent_refused_connections_total", reason="unread_response")
            if dropped > metric(before, "structsent_refused_connections_total", reason="unread_response"):
                break
            time.sleep(0.1)
        took = time.monotonic() - started
        assert took < 5 * READ_TIMEOUT_S, took  # a deadline or two, not the kernel's buffer filled first
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            reset = True
        assert reset  # a reset, not a clean end after the megabytes the kernel held
    finally:
        sock.close()


def test_a_slow_but_steady_reader_of_a_large_answer_is_not_refused_for_its_next_headers(guarded):
    """The deadline for the next request's headers ran while the answer was still being taken:
    a client reading a 1.7 MB answer for longer than read_timeout_s was counted as refused
    (read_timeout_s) and its connection closed."""
    before = guarded.metrics()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", guarded.port))
    try:
        sock.sendall(b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n")
        received, started = b"", time.monotonic()
        while time.monotonic() - started < 2.5 * READ_TIMEOUT_S:  # steady: 64 KB every 0.1 s
            received += sock.recv(65536)
            time.sleep(0.1)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        assert len(body) < length  # still taking it when read_timeout_s had passed
        while len(body) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "the connection closed before the answer ended"
            body += chunk
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection, kept alive
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    dropped = metric(guarded.metrics(), "structsent_refused_connections_total", reason="unread_response")
    assert dropped == metric(before, "structsent_refused_connections_total", reason="unread_response")
    # (not read_timeout_s: the metrics client's idle keep-alive connection is closed under it)


def test_a_client_leaving_mid_body_is_counted_as_499_not_500(guarded):
    key = dict(endpoint="/v1/sentiment")
    before = guarded.metrics()
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n".encode() + b'{"texts": '
        )
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while metric(guarded.metrics(), "structsent_request_duration_seconds_count", **key, status="499") == metric(
        before, "structsent_request_duration_seconds_count", **key, status="499"
    ):
        assert time.monotonic() < deadline, "the disconnect was not counted as 499"
        time.sleep(0.05)
    after = guarded.metrics()
    assert metric(after, "structsent_request_duration_seconds_count", **key, status="500") == metric(
        before, "structsent_request_duration_seconds_count", **key, status="500"
    )


# -- the protocol in-process: states a real socket cannot reach on cue -------------------------------
class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.aborted = False
        self.reading = True
        self.buffered = 0  # bytes the transport holds that the client has not taken

    def write(self, data) -> None:
        self.written += bytes(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def never_answering_app(scope, receive, send) -> None:
    await asyncio.Event().wait()  # a request the model is still computing


class GatedApp:
    """Answers each request 200 with its path once ``gate`` opens (a model still computing until then)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        await self.gate.wait()
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def statuses(written: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", written)]


def protocol_with(app, *, read_timeout_s: float = 30.0, max_header_bytes: int = 4096):
    pytest.importorskip("httptools")  # the protocol whose parser callbacks these states need
    refused: list[str] = []
    policy = ConnectionPolicy(max_connections=10, read_timeout_s=read_timeout_s, max_header_bytes=max_header_bytes,
                              on_refused=refused.append)
    config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="critical")
    config.load()
    protocol = GuardedHTTPProtocol(config, ServerState(), {ConnectionPolicy.STATE_KEY: policy})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport, refused


def test_headers_pipelined_behind_a_request_in_progress_are_capped():
    """They were held by the parser, unmeasured, for as long as the request before them ran."""
    asyncio.run(_headers_pipelined_behind_a_request_in_progress())


async def _headers_pipelined_behind_a_request_in_progress() -> None:
    app = GatedApp()
    protocol, transport, refused = protocol_with(app)
    protocol.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)  # the request is in progress
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    for _ in range(10):
        protocol.data_received(b"X-Padding: " + b"a" * 1000 + b"\r\n")
    # refused at the cap: nothing more is read (the rest above was dropped), and the 431 waits
    # for the answer owed to the request before it
    assert not transport.reading and transport.written == b"" and not transport.closed
    app.gate.set()
    await asyncio.sleep(0.05)
    assert statuses(transport.written) == [200, 431] and transport.closed
    assert refused == ["max_header_bytes"]
    protocol.connection_lost(None)


def test_one_pipelined_header_value_streamed_without_end_is_capped():
    """The parser gives a header only once its value ends: counting its callbacks let one endless
    value through (91 MB held, the event loop slowed for every client)."""
    asyncio.run(_one_pipelined_header_value_streamed())


async def _one_pipelined_header_value_streamed() -> None:
    app = GatedApp()
    protocol, transport, refused = protocol_with(app)  # max_header_bytes 4096
    protocol.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)  # the request is in progress
    protocol.data_received(b"GET /health HTTP/1.1\r\nX-Big: ")
    for _ in range(10):
        protocol.data_received(b"a" * 1000)
    assert not transport.reading and transport.written == b""  # refused at the cap; the 431 waits
    app.gate.set()
    await asyncio.sleep(0.05)
    assert statuses(transport.written) == [200, 431] and transport.closed
    assert refused == ["max_header_bytes"]
    protocol.connection_lost(None)


@pytest.mark.parametrize(("pipelined", "status", "reason"), [
    (b"GARBAGE\r\n\r\n", 400, "invalid_request"),
    # whole headers over the cap in the same read as the requests before them: they passed the
    # checks on reads (a 70 KB header under a 64 KiB cap was answered 200)
    (b"GET /big HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 5000 + b"\r\n\r\n", 431, "max_header_bytes"),
])
def test_a_refused_pipelined_request_is_answered_after_the_requests_before_it(pipelined, status, reason):
    """The refusal was written at once and the connection closed: the client read the 400 (431)
    as the answer to its valid request before it, whose own answer never came."""
    asyncio.run(_a_refused_pipelined_request_after_the_requests_before_it(pipelined, status, reason))


async def _a_refused_pipelined_request_after_the_requests_before_it(pipelined: bytes, status: int,
                                                                    reason: str) -> None:
    app = GatedApp()
    protocol, transport, refused = protocol_with(app)  # max_header_bytes 4096
    protocol.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                           + pipelined + b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.written == b"" and not transport.closed
    app.gate.set()
    await asyncio.sleep(0.05)
    assert statuses(transport.written) == [200, 200, status] and transport.closed
    assert transport.written.index(b"/first") < transport.written.index(b"/second")
    assert b"/never" not in transport.written and refused == [reason]
    protocol.connection_lost(None)


def test_a_bad_body_of_the_request_in_progress_is_still_refused_at_once():
    """Malformed chunked framing belongs to the request being read: 400 at once, not held."""
    asyncio.run(_a_bad_body_of_the_request_in_progress())


async def _a_bad_body_of_the_request_in_progress() -> None:
    protocol, transport, refused = protocol_with(never_answering_app)
    protocol.data_received(b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    protocol.data_received(b"zz\r\nnot a chunk\r\n")
    assert statuses(transport.written) == [400] and transport.closed and refused == ["invalid_request"]
    protocol.connection_lost(None)


def test_a_bad_body_of_a_request_pipelined_behind_one_in_progress_is_answered_after_it():
    """The 400 went out at once and closed the connection: the client read it as the answer to its
    valid request before (whose own answer never came)."""
    asyncio.run(_a_bad_body_of_a_pipelined_request())


async def _a_bad_body_of_a_pipelined_request() -> None:
    app = GatedApp()
    protocol, transport, refused = protocol_with(app)
    protocol.data_received(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                           b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbad\r\n")
    await asyncio.sleep(0)
    assert transport.written == b""
    app.gate.set()
    await asyncio.sleep(0.05)
    assert statuses(transport.written) == [200, 400] and transport.closed and refused == ["invalid_request"]
    assert b"/first" in transport.written and b"/second" not in transport.written  # the refusal is its answer
    protocol.connection_lost(None)


def test_a_client_that_leaves_is_seen_by_the_request_in_progress_not_only_the_last_pipelined():
    """uvicorn told only the last request parsed: the one running went on computing and then
    wrote to the closed connection (RuntimeError logged as a backend error, counted as a 200)."""
    asyncio.run(_a_client_that_leaves_with_pipelined_requests())


async def _a_client_that_leaves_with_pipelined_requests() -> None:
    seen: list[tuple[str, str]] = []

    async def app(scope, receive, send) -> None:
        while (message := await receive())["type"] != "http.disconnect":
            if not message.get("more_body"):
                seen.append((scope["path"], "read"))
        seen.append((scope["path"], "disconnect"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    protocol, transport, refused = protocol_with(app)
    protocol.data_received(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                           b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    await asyncio.sleep(0.05)
    assert seen == [("/first", "read")]  # /second waits behind it
    transport.closed = True
    protocol.connection_lost(None)
    await asyncio.sleep(0.05)
    assert seen == [("/first", "read"), ("/first", "disconnect")]
    assert transport.written == b""  # nothing written to the closed connection


def test_answers_the_client_does_not_read_drop_the_connection_after_the_deadline():
    asyncio.run(_answers_the_client_does_not_read())


async def an_answer_filling_the_send_buffer(*, read_timeout_s: float, buffered: int):
    """A protocol sending a large answer whose bytes fill the transport's buffer: writing paused."""
    protocol, transport, refused = protocol_with(never_answering_app, read_timeout_s=read_timeout_s)
    protocol.data_received(b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)  # its answer is being sent
    transport.buffered = buffered
    protocol.pause_writing()  # the transport's buffer went over its high-water mark
    return protocol, transport, refused


async def _answers_the_client_does_not_read() -> None:
    protocol, transport, refused = await an_answer_filling_the_send_buffer(read_timeout_s=0.6, buffered=1_700_000)
    try:
        await asyncio.sleep(0.4)
        transport.buffered -= 100_000  # a slow client: it takes some, the buffer stays above low water
        await asyncio.sleep(0.5)  # past the first deadline: progress was made, so it waits again
        assert not transport.closed and refused == []
        await asyncio.sleep(0.9)  # a whole deadline without progress
        assert transport.aborted and refused == ["unread_response"]  # aborted: a close would wait to send
    finally:
        protocol.connection_lost(None)  # (which resumes writing: the answer's task can end)


def test_resumed_writing_stops_the_deadline():
    asyncio.run(_resumed_writing_stops_the_deadline())


async def _resumed_writing_stops_the_deadline() -> None:
    protocol, transport, refused = await an_answer_filling_the_send_buffer(read_timeout_s=0.3, buffered=100_000)
    transport.buffered = 0
    protocol.resume_writing()  # below the low-water mark: the client took it
    try:
        await asyncio.sleep(0.6)
        assert not transport.closed and refused == []
    finally:
        protocol.connection_lost(None)


def test_bodies_in_the_reads_of_pipelined_headers_are_not_counted_as_headers():
    """The whole read was counted: a body (of the request in progress, or the pipelined one's own)
    beside a pipelined request's first header bytes made a valid client a 431."""
    asyncio.run(_bodies_in_the_reads_of_pipelined_headers())


async def _bodies_in_the_reads_of_pipelined_headers() -> None:
    protocol, transport, refused = protocol_with(never_answering_app)  # max_header_bytes 4096
    protocol.data_received(b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
    await asyncio.sleep(0)  # the request is in progress
    protocol.data_received(b"x" * 70000 + b"GET /health HTTP/1.1\r\nHo")
    protocol.data_received(b"st: x\r\nContent-Length: 9000\r\n\r\n" + b"y" * 9000)
    assert not transport.closed and refused == [] and transport.written == b""
    protocol.connection_lost(None)


async def answering_app(scope, receive, send) -> None:
    """Answers at once, without reading the body (as a GET route, or a 405, does)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_body_still_trickling_in_after_an_early_answer_is_cut_at_the_deadline():
    """No deadline covered it: a GET with a large declared body sent a byte at a time held its
    connection (and, a few of them, every connection slot) for as long as the client liked."""
    asyncio.run(_a_body_still_trickling_in_after_an_early_answer())


async def _a_body_still_trickling_in_after_an_early_answer() -> None:
    protocol, transport, refused = protocol_with(answering_app, read_timeout_s=0.3)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0.05)
        protocol.data_received(b"x")  # each byte well within any per-read timeout
        if transport.closed:
            break
    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    assert transport.closed and refused == ["read_timeout_s"]
    protocol.connection_lost(None)


def test_a_body_that_ends_after_an_early_answer_keeps_the_connection():
    asyncio.run(_a_body_that_ends_after_an_early_answer())


async def _a_body_that_ends_after_an_early_answer() -> None:
    protocol, transport, refused = protocol_with(answering_app, read_timeout_s=0.3)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nxx")
    await asyncio.sleep(0.1)
    protocol.data_received(b"xx")  # the body is whole: its deadline (due 0.3 s after the answer) is off
    await asyncio.sleep(0.25)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # in time for the next headers'
    await asyncio.sleep(0.05)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2 and refused == []
    protocol.connection_lost(None)


class SocketTransport(RecordingTransport):
    """A RecordingTransport over one end of a real socket pair: what the client has sent and the
    event loop has not read yet waits in that socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name, default=None):
        return self.sock if name == "socket" else super().get_extra_info(name, default)


def protocol_over(sock: socket.socket, app) -> tuple[GuardedHTTPProtocol, SocketTransport]:
    """A protocol whose connection is ``sock``, the server's end of a socket pair."""
    pytest.importorskip("httptools")
    protocol, _, _ = protocol_with(app)
    transport = SocketTransport(sock)
    protocol.connection_made(transport)
    return protocol, transport


def test_a_request_in_the_socket_when_the_shutdown_begins_is_answered_not_reset():
    """The shutdown closed every connection that looked idle, though a request sent just before
    it was waiting unread in the socket: the close reset the connection, the request unanswered."""
    asyncio.run(_a_request_in_the_socket_when_the_shutdown_begins())


async def _a_request_in_the_socket_when_the_shutdown_begins() -> None:
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        protocol, transport = protocol_over(server_end, answering_app)
        client_end.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")  # sent; not read by the loop yet
        protocol.shutdown()
        assert not transport.closed and protocol.policy.draining
        protocol.data_received(server_end.recv(4096))  # the loop reads it
        for _ in range(50):
            await asyncio.sleep(0.02)
            if transport.closed:
                break
        assert statuses(transport.written) == [200] and transport.closed  # answered, then closed
        protocol.connection_lost(None)

        idle, idle_transport = protocol_over(server_end, answering_app)  # nothing sent: closed at once, as before
        idle.shutdown()
        assert idle_transport.closed and idle_transport.written == b""
        idle.connection_lost(None)


def test_the_rest_of_a_body_answered_early_does_not_hold_the_shutdown():
    """A request answered before its body arrived (a GET with a body) whose body still trickled in:
    its bytes were taken for a request arriving, and the shutdown waited for --graceful-timeout."""
    asyncio.run(_the_rest_of_a_body_answered_early_at_shutdown())


async def _the_rest_of_a_body_answered_early_at_shutdown() -> None:
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        protocol, transport = protocol_over(server_end, answering_app)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if statuses(transport.written):
                break
        assert statuses(transport.written) == [200] and not transport.closed
        client_end.sendall(b"x")  # more of that body, unread
        protocol.shutdown()
        assert transport.closed  # at once, as before the shutdown read requests in the socket
        protocol.connection_lost(None)


def test_a_refusal_while_the_client_still_sends_reaches_an_asyncio_client(guarded):
    """413 before a large body: the server closed with the body still arriving, the kernel reset
    the connection, and an asyncio client (whose stream raises the reset before the bytes it had
    received) lost the answer. The connection now lingers: answer, end of stream, the rest read."""
    asyncio.run(_a_refusal_while_the_client_still_sends(guarded.port))


async def _a_refusal_while_the_client_still_sends(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body_size = 2 << 20  # over --max-body-bytes: refused from its Content-Length, before any of it is read
    writer.write(f"POST /v1/sentiment HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {body_size}\r\n\r\n".encode())
    writer.write(b"a" * (1 << 20))  # sent on without waiting, as a client streaming its upload does
    await asyncio.sleep(0.5)  # the answer arrives meanwhile (and, without lingering, the reset)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert body["limit"] == "max_body_bytes"
    writer.close()


@pytest.mark.parametrize(("path", "answered"), [("/nothere", 404), ("/health", 405), ("/v1/sentiment/", 404)])
def test_a_request_that_expects_100_continue_where_no_route_takes_a_body_is_answered_at_once(guarded, path, answered):
    """The body limits read every POST's body before routing, so a client sending Expect:
    100-continue to a path with no such route was told to send its body (100 Continue), then got
    its 404 or 405. It gets the answer at once; the labelling routes still ask for the body."""
    body = '{"texts": ["很好吃"]}'.encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with connect(guarded) as sock:
        sock.sendall(head)
        status, headers, answer = read_response(sock)
        assert status == answered and answer["error"].endswith(f"POST {path}")
        # closed: a request sent next without the body would have been read as the body
        assert headers["connection"] == "close" and closed_by_server(sock)
    with connect(guarded) as sock:
        sock.sendall(head.replace(path.encode(), b"/v1/sentiment", 1))
        continue_line = b"HTTP/1.1 100 Continue\r\n\r\n"
        received = b""
        while len(received) < len(continue_line):
            received += sock.recv(len(continue_line) - len(received))
        assert received == continue_line
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and len(answer["results"]) == 1


@pytest.mark.parametrize("charset", ["gbk", '"GB18030"', "utf-16", "latin-1"])
def test_a_body_declared_in_a_charset_other_than_utf8_is_refused(guarded, charset):
    """A body sent as GBK (common for Chinese text) under charset=gbk was read as UTF-8: "not valid
    UTF-8" (422), or labelled as such where its bytes happened to be valid UTF-8 (ASCII ones)."""
    for body in ('{"texts": ["好吃"]}'.encode("gbk"), b'{"texts": ["ok"]}'):
        response = guarded.client.post("/v1/sentiment", content=body,
                                       headers={"content-type": f"application/json; charset={charset}"})
        assert response.status_code == 415, (charset, body)
        assert_error_shape(response.json(), "validation")
        assert response.json()["error"].startswith(f"Content-Type charset={charset.strip(chr(34))} is not accepted; "
                                                   "send the body as UTF-8 JSON")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/json;charset=UTF8",
                                          'application/json; charset="utf-8"', "application/json"])
def test_a_body_declared_utf8_or_undeclared_is_read(guarded, content_type):
    response = guarded.client.post("/v1/sentiment", content='{"texts": ["好吃"]}'.encode(),
                                   headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert len(response.json()) == 1


@pytest.mark.parametrize(("request_line", "version"), [(b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", "2.0"),
                                                        (b"POST /predict HTTP/2.0\r\nHost: x\r\n"
                                                         b"Content-Type: application/json\r\nContent-Length: 15\r\n"
                                                         b'\r\n{"inputs": "a"}', "2.0"),
                                                        (b"GET /health\r\n\r\n", "0.9")])
def test_http_versions_other_than_1_0_and_1_1_get_505(server, request_line, version):
    """The HTTP parser lets them through; they were answered as HTTP/1.1 requests (200)."""
    with connect(server) as sock:
        sock.sendall(request_line)
        status, headers, body = read_response(sock)
        assert status == 505
        assert body == {"error": f"HTTP/{version} is not supported; send HTTP/1.1 (or HTTP/1.0)",
                        "error_type": "validation"}
        assert headers["connection"] == "close" and closed_by_server(sock)
    with connect(server) as sock:  # HTTP/1.0 stays answered
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize("headers", [[("content-type", "application/json; charset=utf-8; charset=gbk")],
                                     [("content-type", "application/json; charset=gbk; charset=utf-8")],
                                     [("content-type", "application/json"), ("content-type", "application/json; charset=gbk")]])
def test_any_charset_other_than_utf8_a_request_declares_is_refused(guarded, headers):
    """Only the first charset parameter of the first Content-Type header was read: a second gbk passed."""
    response = guarded.client.post("/v1/sentiment", content=b'{"texts": ["ok"]}', headers=headers)
    assert response.status_code == 415 and "charset=gbk is not accepted" in response.json()["error"]


def test_ascii_is_utf8():
    from structsent.server.middleware import _charset_other_than_utf8

    assert _charset_other_than_utf8([(b"content-type", b"application/json; charset=US-ASCII")]) is None
    assert _charset_other_than_utf8([(b"content-type", b"application/json; charset='gbk'")]) == b"gbk"
