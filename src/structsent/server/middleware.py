"""Pure ASGI middleware of the HTTP app, cheap per request (no BaseHTTPMiddleware, no body copies).

Outermost first: ``RequestTimer`` (latency and status into the metrics), ``CloseWhenDraining``
(``Connection: close`` once a graceful shutdown has begun), ``BearerAuth`` (``--api-key``, only
when one is set) and ``BodyLimits`` (the body's size cap and read deadline).

``ConnectionPolicy`` is what the app and its HTTP protocol (``connections.py``) share: the
connection limits, and whether the server is draining.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi.responses import JSONResponse

from ..lines import one_line
from .metrics import ServerMetrics
from .schemas import error_body

RETRY_AFTER_S = 1
CLOSE_HEADER = (b"connection", b"close")
CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request": nothing was sent
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UTF_8 = frozenset({"utf-8", "utf-8-sig"})  # what json.detect_encoding names UTF-8 (with or without a BOM)
SUPPORTED_HTTP_VERSIONS = frozenset({"1.0", "1.1"})
UTF_8_NAMES = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii"})  # a Content-Type's charsets read as UTF-8 (ASCII is)


def error_json(
    message: str,
    error_type: str,
    *,
    status: int,
    limit: str | None = None,
    limit_value: float | None = None,
    headers: Mapping[str, str] | None = None,
    close: bool = False,
) -> JSONResponse:
    """An error answer; ``close`` ends the connection after it (a body may be left unread)."""
    headers = dict(headers or {})
    if status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if close:
        headers["Connection"] = "close"
    body = error_body(message, error_type, limit=limit, limit_value=limit_value)
    return JSONResponse(body, status_code=status, headers=headers or None)


class ConnectionPolicy:
    """The limits on client connections, handed to the HTTP protocol through the lifespan state.

    ``draining`` turns True when the server begins a graceful shutdown (the protocol sets it);
    from then on every response carries ``Connection: close``.
    """

    STATE_KEY = "structsent_connection_policy"

    def __init__(
        self,
        *,
        max_connections: int,
        read_timeout_s: float,
        max_header_bytes: int,
        on_refused: Callable[[str], None],
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.max_header_bytes = max_header_bytes
        self.on_refused = on_refused  # called with the reason a connection was refused (metrics)
        self.draining = False


class RequestTimer:
    """Observes every request's latency and status into the metrics, by endpoint.

    A request whose client went away before its answer is counted with status 499, whatever the
    app then tried to send (nobody received it).
    """

    def __init__(self, app, *, metrics: ServerMetrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        client_gone = False

        async def receive_noting_disconnect():
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect" and status is None:
                client_gone = True
            return message

        async def send_noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_noting_disconnect, send_noting_status)
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            answered = CLIENT_CLOSED_STATUS if client_gone else (status or 500)
            self.metrics.observe_request(endpoint, answered, time.perf_counter() - started)


class HttpVersions:
    """HTTP/1.0 and HTTP/1.1 only. The HTTP parser lets "GET / HTTP/2.0" and HTTP/0.9's bare
    "GET /" through, and they were answered as HTTP/1.1 requests; RFC 9110 answers a version the
    server does not support with 505."""

    def __init__(self, app, *, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        version = scope.get("http_version", "1.1")
        if scope["type"] != "http" or version in SUPPORTED_HTTP_VERSIONS:
            await self.app(scope, receive, send)
            return
        self.on_reject("validation")
        response = error_json(f"HTTP/{bounded(version)} is not supported; send HTTP/1.1 (or HTTP/1.0)",
                              "validation", status=505, close=True)  # a body, if any, is left unread
        await response(scope, receive, send)


class CloseWhenDraining:
    """Adds ``Connection: close`` to every response started once the server is draining, so that
    keep-alive clients open a new connection (to another server) instead of reusing this one.

    A request still unanswered when the graceful shutdown's time runs out is cancelled by the
    server; it is answered 503 (``unhealthy``, with ``Retry-After``) in the error shape, where the
    server alone would send a plain-text 500.
    """

    def __init__(self, app, *, policy: ConnectionPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy

        started = False

        async def send_closing_when_draining(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if policy.draining:
                    message = _with_close_header(message)
            await send(message)

        try:
            await self.app(scope, receive, send_closing_when_draining)
        except asyncio.CancelledError:
            if started or not policy.draining:
                raise
            # the graceful shutdown's time ran out: the task ends here, answered
            response = error_json(
                "the server is shutting down; retry on another connection", "unhealthy", status=503, close=True
            )
            await response(scope, receive, send)


class BearerAuth:
    """Refuses (401) requests without ``Authorization: Bearer <api key>``, except on ``open_paths``.

    The key is compared in constant time; neither it nor what a client sent is ever logged.
    """

    def __init__(self, app, *, api_key: str, open_paths: frozenset[str], on_reject: Callable[[str], None]) -> None:
        self.app = app
        self._expected = api_key.encode()
        self.open_paths = open_paths
        self.on_reject = on_reject  # called with the error type of each refusal

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._authorized(scope["headers"]):
            await self.app(scope, receive, send)
            return
        self.on_reject("unauthorized")
        response = error_json(
            "missing or wrong API key: send the header `Authorization: Bearer <key>`",
            "unauthorized",
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
            close=True,  # the body, if any, is left unread
        )
        await response(scope, receive, send)

    def _authorized(self, headers) -> bool:
        """One Authorization header, holding the key. Two are refused whatever they hold (the first
        counted: a proxy adding its own before the client's decided which one the server read)."""
        given = [value for name, value in headers if name == b"authorization"]
        if len(given) != 1:
            return False
        scheme, _, token = given[0].partition(b" ")
        # compare_digest on every path, so that timing says nothing about the scheme either
        matches = hmac.compare_digest(token.strip(), self._expected)
        return matches and scheme.lower() == b"bearer"


class BodyTooLargeError(Exception):
    pass


class BodyLimits:
    """Reads a request's body once, within ``max_bytes`` (413) and ``read_timeout_s`` from the
    moment its headers arrived (408), before the app parses a byte of it; then replays it. A body
    in UTF-16 or UTF-32, which the JSON parser would otherwise read, is refused (422), and so is a
    compressed one (any Content-Encoding but identity: 415; any transfer coding but chunked: 501,
    as RFC 9112 answers a coding it does not implement), and one declared in a charset other than
    UTF-8 (415).

    With the connection cap this bounds what the bodies of clients can hold in memory:
    max_connections x max_body_bytes at most, for read_timeout_s at most.

    Only requests to ``paths`` (the routes that read a body) are read: any other is answered (404,
    405) without its body; the connection's deadlines cover what the client sends of it anyway. A
    client that sent ``Expect: 100-continue`` is not asked for its body (the server asks when the
    body is first read), and its answer closes the connection: whether it will send the body
    after all is not known, and a next request on the connection would be read as that body.
    """

    def __init__(self, app, *, max_bytes: int, read_timeout_s: float, on_reject: Callable[[str], None],
                 paths: frozenset[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.on_reject = on_reject  # called with the error type of each refusal
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self.paths:
            expects_continue = (_header(scope["headers"], b"expect") or b"").strip().lower() == b"100-continue"
            await self.app(scope, receive, _closing(send) if expects_continue else send)
            return
        encoding = _coding_other_than(scope["headers"], b"content-encoding", b"identity")
        if encoding is not None:
            await self._encoded(scope, receive, send, encoding)
            return
        coding = _coding_other_than(scope["headers"], b"transfer-encoding", b"chunked")
        if coding is not None:
            await self._transfer_coded(scope, receive, send, coding)
            return
        charset = _charset_other_than_utf8(scope["headers"])
        if charset is not None:
            await self._other_charset(scope, receive, send, charset)
            return
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            body = await _within(self.read_timeout_s, self._read(receive))
        except BodyTooLargeError:
            await self._too_large(scope, receive, send)
            return
        except asyncio.TimeoutError:
            await self._too_slow(scope, receive, send)
            return
        if body is None:  # the client disconnected
            return
        if body and json.detect_encoding(body) not in UTF_8:  # json.loads would read UTF-16 and UTF-32 too
            await self._not_utf8(scope, receive, send)
            return
        replayed = False

        async def replay_then_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay_then_receive, send)

    async def _read(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope, receive, send) -> None:
        self.on_reject("validation")
        response = error_json(
            f"request body larger than max_body_bytes={self.max_bytes}",
            "validation",
            status=413,
            limit="max_body_bytes",
            limit_value=self.max_bytes,
            close=True,  # the rest of the body is left unread
        )
        await response(scope, receive, send)

    async def _encoded(self, scope, receive, send, encoding: bytes) -> None:
        """A compressed body (Content-Encoding: gzip...) was read as its compressed bytes: a gzip body
        was "not valid UTF-8" (422), a plain one under the header was labelled as if it were absent."""
        self.on_reject("validation")
        shown = shown_header(encoding)
        response = error_json(f"Content-Encoding: {shown} is not accepted; send the body uncompressed",
                              "validation", status=415, close=True)  # the body is left unread
        await response(scope, receive, send)

    async def _other_charset(self, scope, receive, send, charset: bytes) -> None:
        """A body declared in another charset (charset=gbk, a common one for Chinese text) was read
        as UTF-8: "not valid UTF-8" (422), or, where its bytes happened to be, labelled as such."""
        self.on_reject("validation")
        response = error_json(f"Content-Type charset={shown_header(charset)} is not accepted; send the body as "
                              "UTF-8 JSON (charset=utf-8, or no charset: RFC 8259)",
                              "validation", status=415, close=True)  # the body is left unread
        await response(scope, receive, send)

    async def _transfer_coded(self, scope, receive, send, coding: bytes) -> None:
        """501 for a transfer coding other than chunked: the body would be read as its coded bytes."""
        self.on_reject("validation")
        shown = shown_header(coding)
        response = error_json(f"Transfer-Encoding: {shown} is not implemented; send the body with chunked "
                              "alone, or with a Content-Length", "validation", status=501, close=True)
        await response(scope, receive, send)

    async def _not_utf8(self, scope, receive, send) -> None:
        self.on_reject("validation")
        response = error_json("malformed JSON: the body is not valid UTF-8 (JSON is exchanged in UTF-8, RFC 8259)",
                              "validation", status=422)
        await response(scope, receive, send)

    async def _too_slow(self, scope, receive, send) -> None:
        self.on_reject("timeout")
        response = error_json(
            f"request body not received within read_timeout_s={self.read_timeout_s:g} seconds",
            "timeout",
            status=408,
            limit="read_timeout_s",
            limit_value=self.read_timeout_s,
            close=True,
        )
        await response(scope, receive, send)


def bounded(text: str, limit: int = 60) -> str:
    """A client's value (a field name, a header, a path) as an error message shows it: whole when
    short, else its start and its length (a 900,000-character field name came back whole in the 422);
    its control characters escaped (``one_line``), since a message reaches terminals and logs (a
    field name "x\\n\\x1b[31m" came back as a line break and a colour change). Cut before it is
    escaped, so that no escape is cut in half. A lone UTF-16 surrogate (JSON's "\\ud800") is written
    as its escape: no UTF-8 answer can hold it (the 422 naming such a key failed as a 500)."""
    shown = text if len(text) <= limit else text[:limit]
    shown = one_line(_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", shown))
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"


_SURROGATE = re.compile("[\ud800-\udfff]")


def shown_header(value: str | bytes) -> str:
    """A header's value as an error message shows it: its bytes read as UTF-8, as the client most
    likely wrote them (Starlette reads them as Latin-1: "text/纯文本" came back as mojibake), a byte
    that is not UTF-8 as ``\\xNN``; then ``bounded``."""
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:  # not as read off the wire: shown as it is
            return bounded(value)
    return bounded(raw.decode("utf-8", errors="backslashreplace"))


def _coding_other_than(headers, name: bytes, accepted: bytes) -> bytes | None:
    """The first coding other than ``accepted`` in the request's ``name`` headers (Content-Encoding,
    Transfer-Encoding: a list, possibly over several headers, every one read), or None."""
    for key, value in headers:
        if key == name:
            for coding in value.split(b","):
                if coding.strip().lower() not in (accepted, b""):
                    return coding.strip()
    return None


def _charset_other_than_utf8(headers) -> bytes | None:
    """A charset other than UTF-8 that the request's Content-Type headers declare (every one, each
    parameter of each: a second charset made the first ambiguous), or None."""
    for key, value in headers:
        if key != b"content-type":
            continue
        for parameter in value.split(b";")[1:]:
            name, _, declared = parameter.partition(b"=")
            if name.strip().lower() == b"charset":
                charset = declared.strip().strip(b"\"'").strip()
                if charset.lower() not in UTF_8_NAMES:
                    return charset
    return None


def _closing(send):
    """``send`` that adds ``Connection: close`` to the answer's headers."""
    async def send_closing(message):
        await send(_with_close_header(message) if message["type"] == "http.response.start" else message)

    return send_closing


def _with_close_header(start_message: dict) -> dict:
    """An ``http.response.start`` message with ``Connection: close`` among its headers."""
    headers = list(start_message.get("headers", ()))
    return start_message if CLOSE_HEADER in headers else {**start_message, "headers": [*headers, CLOSE_HEADER]}


def _header(headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable):
        async with asyncio.timeout(seconds):  # a timer handle, no extra task
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _within(seconds: float, awaitable: Awaitable):
        return await asyncio.wait_for(awaitable, seconds)
