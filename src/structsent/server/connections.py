"""The HTTP protocol of `structsent serve`: uvicorn's own, with a cap on connections and a
deadline for request headers, which uvicorn does not have.

- A connection beyond ``max_connections`` is answered 503 (``limit: max_connections``) and
  closed at once, before anything is read from it: idle sockets can neither exhaust the
  process's file descriptors nor hold memory.
- A request's headers must arrive within ``read_timeout_s`` of the connection opening or of the
  previous response; else 408 (when part of them arrived) or a silent close. Headers longer than
  ``max_header_bytes`` are answered 431, whether they arrive in one read or in many, first or
  pipelined. (The body's deadline and size cap are the app's: ``middleware.BodyLimits``.)
- uvicorn's own refusal of an unparsable request (400) is answered in the ErrorResponse shape.
- A refusal (400, 431) of a request pipelined behind others is sent after their answers, so
  that a client reads each answer against its own request.
- While the transport's send buffer is full, the client must take some of its answers' bytes
  within each ``read_timeout_s``, else the connection is dropped: a client that pipelines requests
  and never reads held its connection slot for ever, and enough of them every slot.
- A client that leaves while a request pipelined before the last one is being answered is seen
  by that request too (uvicorn tells only the last request parsed): its work is dropped and no
  write to the closed connection is attempted.
- A connection closed while the client is still sending (a 413 before its body, a 431 in its
  headers, a 408; not the 503 over the cap, which keeps no socket) is closed gently: the answer
  is sent, then the end of the stream, and what the client still sends is read and dropped until
  it closes too, for ``LINGER_S`` at most. A close
  with unread bytes makes the kernel reset the connection, and a reset makes many clients (asyncio
  streams among them) discard the answer they had already received.
- When the server begins its graceful shutdown, ``ConnectionPolicy.draining`` is set, so that the
  app closes every connection after its response. An idle connection is closed then, unless a
  request has arrived on it that the event loop has not read yet (closing would reset the
  connection under it): that request is read and answered first.

The limits come from the app (its lifespan state holds a ``ConnectionPolicy``), so this protocol
needs no configuration of its own, in one process or in each of ``--workers N``. uvicorn loads
it by name: ``uvicorn.Config(app, http="structsent.server.connections:GuardedHTTPProtocol")``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import logging
import select
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # AutoHTTPProtocol is a variable (h11's or httptools' class, picked at import), which mypy
    # cannot subclass; both have the attributes used here, so h11's stands for it in type checks.
    from uvicorn.protocols.http.h11_impl import H11Protocol as AutoHTTPProtocol
else:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .middleware import RETRY_AFTER_S, ConnectionPolicy
from .schemas import error_body

log = logging.getLogger("structsent.server")

PROTOCOL_NAME = f"{__name__}:GuardedHTTPProtocol"
HEADERS_END = b"\r\n\r\n"
UNREAD_GRACE_S = 0.05  # a deadline met by bytes the event loop has not read yet waits this much more
LINGER_S = 2.0  # a connection closed while its client is still sending is read (and dropped) this long
HEADER_LINE_OVERHEAD = 4  # ": " and CRLF around each header's name and value


class HeadersOverCap(Exception):
    """Raised from the parser's header callback to stop it at ``max_header_bytes`` (431)."""


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A refusal written by the protocol itself: what is logged, counted and sent."""

    status: int
    message: str
    reason: str  # the metrics' label
    response: bytes  # the whole HTTP response
    linger: bool = True  # close lingering while the client may still send; False: the socket goes at once


def refusal_bytes(status: int, message: str, error_type: str, *, limit: str | None, limit_value=None) -> bytes:
    """A whole HTTP/1.1 error response that closes its connection, written without the app."""
    body = json.dumps(error_body(message, error_type, limit=limit, limit_value=limit_value)).encode()
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if status == 503:
        head.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class LingeringTransport(asyncio.Transport):
    """A connection's transport whose ``close`` lingers while the client may still be sending (see
    the module's notes); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, client_may_be_sending: Callable[[], bool]) -> None:
        super().__init__()
        self._transport = transport
        self._client_may_be_sending = client_may_be_sending
        self.lingering = False
        self._timer: asyncio.TimerHandle | None = None
        self.written = 0  # bytes written to the connection (its answers), counted for the send deadline

    # the transport's own
    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)

    def write(self, data) -> None:
        self.written += len(data)
        self._transport.write(data)

    def writelines(self, list_of_data) -> None:
        list_of_data = list(list_of_data)
        self.written += sum(map(len, list_of_data))
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return _can_write_eof(self._transport)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self):
        return self._transport.get_protocol()

    # the close
    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not (self._client_may_be_sending() and _can_write_eof(self._transport)):
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # after the answer; the client reads it, then the end
        self._transport.resume_reading()  # (paused for a held refusal): the client's close must be seen
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, self._transport.close)

    def close_at_once(self) -> None:
        """Close without lingering (a connection refused before anything was read from it: the
        connection cap must bound the sockets held)."""
        self.stop_lingering()
        self._transport.close()

    def abort(self) -> None:
        self.stop_lingering()
        self._transport.abort()

    def stop_lingering(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _kernel_unsent(transport) -> int:
    """Bytes in the socket's send queue, not yet acknowledged by the client (0 where the platform
    cannot say)."""
    sock = transport.get_extra_info("socket")
    try:
        import fcntl
        import termios

        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
    except (ImportError, AttributeError, OSError, ValueError):  # (no fcntl: not a POSIX system)
        return 0


def _reset_on_close(transport) -> None:
    """Make the socket's close a reset (SO_LINGER 0): what its send queue holds is dropped at once."""
    sock = transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (AttributeError, OSError, ValueError):
        pass


def _can_write_eof(transport) -> bool:
    try:
        return bool(transport.can_write_eof())
    except NotImplementedError:
        return False


class GuardedHTTPProtocol(AutoHTTPProtocol):  # h11's or httptools', whichever uvicorn would use
    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.policy: ConnectionPolicy | None = app_state.get(ConnectionPolicy.STATE_KEY)
        self._headers_deadline: asyncio.TimerHandle | None = None  # timer while a request's headers are awaited
        self._awaited_after: object = None  # the request cycle that preceded the awaited request
        self._header_bytes = 0  # bytes received while awaiting headers
        self._header_tail = b""  # their last bytes: an end of headers may be split between two reads
        # Where the parser is (httptools' callbacks; h11's protocol has none, and these stay as set here):
        self._headers_pending = False  # a request began and its headers are not complete
        self._body_pending = False  # a request's headers are complete and its body is still arriving
        self._await_after_body = False  # a response went out before its request's body was read
        self._body_deadline: asyncio.TimerHandle | None = None  # timer for the rest of such a body
        self._pipelined_header_bytes = 0  # bytes received while a pipelined request's headers are pending
        self._body_bytes_in_read = 0  # body bytes the parser delivered from the read in hand
        self._message_header_bytes = 0  # the URL and headers of the request being parsed (httptools)
        self._held_refusal: Refusal | None = None  # a refusal waiting for the answers owed before it
        self._earlier_cycles: list = []  # request cycles parsed before the last one and not yet answered
        self._send_deadline: asyncio.TimerHandle | None = None  # timer while an answer waits for the client
        self._taken_at_deadline = 0  # bytes of answers the client had taken when that timer was set

    @property
    def _client_name(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"

    @property
    def _policy(self) -> ConnectionPolicy:
        """The policy, where only a connection that has one gets here."""
        assert self.policy is not None, "headers deadline without a ConnectionPolicy"
        return self.policy

    # -- the connection ---------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(LingeringTransport(transport, self._client_may_be_sending))
        if self.policy is None:
            return
        if len(self.connections) > self.policy.max_connections:
            self._refuse(
                503,
                f"too many open connections (max_connections={self.policy.max_connections}); retry later",
                "overloaded",
                reason="max_connections",
                limit="max_connections",
                limit_value=self.policy.max_connections,
                linger=False,  # over the cap: no socket is kept, not even for the linger
            )
            return
        self._await_headers()

    def connection_lost(self, exc) -> None:
        if isinstance(self.transport, LingeringTransport):
            self.transport.stop_lingering()
        self._stop_awaiting()
        self._stop_awaiting_body()
        self._stop_awaiting_send()
        self._held_refusal = None
        for cycle in self._earlier_cycles:  # uvicorn marks only the last request parsed
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._earlier_cycles = []
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._held_refusal is not None:  # the connection ends with that refusal: nothing more is read
            return
        if getattr(self.transport, "lingering", False):  # closed: what the client still sends is dropped
            return
        if self._headers_deadline is not None:
            end = self._headers_end(data)
            if end is not None and self._header_bytes + end > self._policy.max_header_bytes:
                self._refuse_large_headers()  # whole headers over the cap, before the parser takes them
                return
            self._header_tail = (self._header_tail + data[-len(HEADERS_END) + 1:])[-len(HEADERS_END) + 1:]
            # Headers only: what follows their end in this read (a body, the next requests) is not.
            self._header_bytes += len(data) if end is None else end
        pipelined_before = self._headers_pending and self._headers_deadline is None
        self._body_bytes_in_read = 0
        super().data_received(data)
        if (pipelined_before or self._headers_pending) and self._headers_deadline is None:
            # A pipelined request's headers were (or are) arriving: this read's bytes that were not
            # a body count (the parser gives a header only once whole, so its callbacks cannot).
            self._pipelined_header_bytes += len(data) - self._body_bytes_in_read
        if self._pipelined_header_bytes > self._policy_cap() and not self.transport.is_closing():
            self._refuse_large_headers()
            return
        if self._headers_deadline is None or self.transport.is_closing():
            return
        if self.cycle is not self._awaited_after:  # the headers are complete: a request began
            self._stop_awaiting()
        elif self._header_bytes > self._policy.max_header_bytes:
            self._refuse_large_headers()

    def on_response_complete(self) -> None:
        self._earlier_cycles = [cycle for cycle in self._earlier_cycles if not cycle.response_complete]
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._held_refusal is not None:
            if not self._answers_owed():
                self._send_refusal(self._held_refusal)
            return
        if self.policy is None:
            return
        if self._send_deadline is None:
            # An answer sent: the client must take it within read_timeout_s (the kernel's send queue,
            # tuning itself up to megabytes, may hold pipelined answers without the transport pausing)
            self._await_progress()
        if not self._body_pending:
            self._await_headers()
        elif self.cycle is not None and self.cycle.response_complete:
            # Answered before its body was read (a GET with a body, a 405): the bytes still to come
            # are that body, not the next headers.
            self._await_after_body = True
            self._await_body()
        # else: the body arriving is a pipelined request's, now run: the app's deadline covers it

    # httptools' parser callbacks (not called under h11)
    def on_message_begin(self) -> None:
        self._headers_pending = True
        self._pipelined_header_bytes = 0
        self._message_header_bytes = 0
        super().on_message_begin()  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + HEADER_LINE_OVERHEAD)
        super().on_header(name, value)  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)

    def on_body(self, body: bytes) -> None:
        self._body_bytes_in_read += len(body)
        super().on_body(body)  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)

    def on_headers_complete(self) -> None:
        self._headers_pending, self._body_pending = False, True
        earlier = self.cycle
        super().on_headers_complete()  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)
        if earlier is not None and earlier is not self.cycle and not earlier.response_complete:
            self._earlier_cycles.append(earlier)  # pipelined behind it: uvicorn keeps only the last

    def on_message_complete(self) -> None:
        self._body_pending = False
        super().on_message_complete()  # type: ignore[misc]  # httptools' protocol (the type checks see h11's)
        if self._await_after_body:
            self._await_after_body = False
            self._stop_awaiting_body()
            self._await_headers()

    def shutdown(self) -> None:
        if self.policy is None:
            super().shutdown()
            return
        self.policy.draining = True
        self._stop_awaiting_body()
        if self._request_arriving():
            # Closing the "idle" connection now would reset it under a request the client has sent:
            # the request is read and answered (with Connection: close) instead; one that never
            # completes meets the headers deadline as any other.
            self.loop.call_later(UNREAD_GRACE_S, self.shutdown)
            return
        self._stop_awaiting()
        super().shutdown()

    def _request_arriving(self) -> bool:
        """Whether an idle connection, awaiting a request's headers, holds the start of one: bytes
        the event loop has not read yet (sent just before the shutdown), or part of its headers.
        (Bounded: the headers deadline runs meanwhile. The rest of a body answered early is no
        request: such a connection closes at once, as before.)"""
        idle = self.cycle is None or self.cycle.response_complete
        if not idle or self._headers_deadline is None or self.transport.is_closing():
            return False
        return self._headers_pending or self._header_bytes > 0 or self._unread_bytes_waiting()

    def send_400_response(self, msg: str) -> None:
        # h11 refuses headers over its buffer size (set to max_header_bytes) as unparsable; the
        # header callback stops httptools' parser there (HeadersOverCap)
        # (_header_bytes counts whole reads: only while no request has begun are they all headers)
        awaiting = self._headers_deadline is not None and self.cycle is self._awaited_after
        if (awaiting and self._header_bytes > self._policy.max_header_bytes) or self._message_headers_over_cap():
            self._refuse_large_headers()
            return
        self._refuse(400, "invalid HTTP request", "validation", reason="invalid_request")

    # -- answers the client does not read --------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()  # (an answer larger than the buffer: the deadline starts before it ends)
        if self.policy is not None and self._send_deadline is None:
            self._await_progress()

    def resume_writing(self) -> None:
        # The deadline runs on: the transport's buffer drains into the kernel's send queue, which
        # tunes itself up to megabytes, while the client takes nothing (every pause restarted it).
        super().resume_writing()

    def _stop_awaiting_send(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _await_progress(self) -> None:
        self._taken_at_deadline = self._taken()
        self._send_deadline = self.loop.call_later(self._policy.read_timeout_s, self._answer_not_taken)

    def _unsent(self) -> int:
        """Bytes of answers the client has not taken: the transport's, and the kernel's send queue
        (not yet acknowledged by the client)."""
        return self.transport.get_write_buffer_size() + _kernel_unsent(self.transport)

    def _taken(self) -> int:
        """Bytes of answers the client has taken since the connection opened."""
        written = self.transport.written if isinstance(self.transport, LingeringTransport) else 0
        return written - self._unsent()

    def _answer_not_taken(self) -> None:
        """The client took none of its answers' bytes for ``read_timeout_s`` since writing was
        paused (a full buffer), with some still owed: drop the connection with a reset (a close
        would wait to send them, and the kernel would hold what it queued). One that takes some (a
        slow reader) has another ``read_timeout_s`` while bytes are still owed to it."""
        self._send_deadline = None
        if self._taken() > self._taken_at_deadline or self._unsent() == 0:
            if self._unsent() > 0:
                self._await_progress()
            return
        self._policy.on_refused("unread_response")  # (the deadline is set only under a policy)
        log.warning("%s did not read its answer within read_timeout_s=%g seconds; connection dropped",
                    self._client_name, self._policy.read_timeout_s)  # rate-limited (logs.py)
        _reset_on_close(self.transport)
        self.transport.abort()

    # -- the deadline for headers -----------------------------------------------------------------
    def _await_headers(self) -> None:
        self._stop_awaiting()
        self._awaited_after = self.cycle
        self._header_bytes = 0
        self._header_tail = b""
        self._headers_deadline = self.loop.call_later(self._policy.read_timeout_s, self._headers_too_slow)

    def _stop_awaiting(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        in_progress = self.cycle is not None and not self.cycle.response_complete
        if self.transport.is_closing() or self.cycle is not self._awaited_after or in_progress:
            return
        if self._header_bytes == 0 and not self._headers_pending:  # idle: nothing to answer
            # (_headers_pending: part of a pipelined request came with the one before it)
            if self._unsent() > 0:
                # Still taking its answer (a slow reader of a large one): its next request waits for
                # that, and the send deadline covers a client that takes nothing.
                self._headers_deadline = self.loop.call_later(self._policy.read_timeout_s, self._headers_too_slow)
                return
            if self._unread_bytes_waiting():
                # A request arrived while the event loop was busy: read it rather than close the
                # socket over it (which would reset the connection under the client's feet).
                self._headers_deadline = self.loop.call_later(UNREAD_GRACE_S, self._headers_too_slow)
                return
            self._policy.on_refused("idle")  # (not a refusal of a request: counted apart)
            self.transport.close()
            return
        timeout = self._policy.read_timeout_s
        self._refuse(
            408, f"request headers not received within read_timeout_s={timeout:g} seconds", "timeout",
            reason="read_timeout_s", limit="read_timeout_s", limit_value=timeout,
        )

    # -- the rest of a body answered early, and headers that came while another request ran -------
    def _await_body(self) -> None:
        """A body still arriving after its response (which no deadline of the app's covers any
        more) must end within ``read_timeout_s``, else the connection is closed: a body trickled in
        byte by byte held the connection, and enough of them every connection slot."""
        self._stop_awaiting_body()
        self._body_deadline = self.loop.call_later(self._policy.read_timeout_s, self._body_too_slow)

    def _stop_awaiting_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        if self._await_after_body and not self.transport.is_closing():
            self._policy.on_refused("read_timeout_s")
            self.transport.close()  # its response went out already: nothing to answer

    def _policy_cap(self) -> float:
        """Headers of a request pipelined behind one still being answered are held by the parser
        until that one is done, and no deadline measures them: capped too (431), or they could
        grow without bound meanwhile."""
        return self.policy.max_header_bytes if self.policy is not None else float("inf")

    def _headers_end(self, data: bytes) -> int | None:
        """Where the awaited headers end in ``data``: the index just past their blank line (which
        may be split between the last read and this one), or None. A request whose headers arrive
        whole in one read is measured against the cap with it."""
        tail = self._header_tail
        found = (tail + data[: len(HEADERS_END) - 1]).find(HEADERS_END)  # split across the two reads
        if found >= 0:
            return found - len(tail) + len(HEADERS_END)
        found = data.find(HEADERS_END)  # within this read (no copy of it)
        return None if found < 0 else found + len(HEADERS_END)

    def _client_may_be_sending(self) -> bool:
        """Whether a close now would leave the client sending: a request's headers or body are
        arriving, or bytes wait unread in the socket."""
        return self._headers_pending or self._body_pending or self._unread_bytes_waiting()

    def _unread_bytes_waiting(self) -> bool:
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        poll = select.poll()  # not select.select: descriptors may exceed FD_SETSIZE
        poll.register(sock.fileno(), select.POLLIN)
        return bool(poll.poll(0))

    def _refuse_large_headers(self) -> None:
        cap = self._policy.max_header_bytes
        self._refuse(
            431, f"request headers larger than max_header_bytes={cap}", "validation",
            reason="max_header_bytes", limit="max_header_bytes", limit_value=cap,
        )

    def _count_header_bytes(self, size: int) -> None:
        """Headers that arrive whole in one read with the request before them pass the checks on
        reads: measured here as the parser hands them over."""
        self._message_header_bytes += size
        if self._message_headers_over_cap():
            raise HeadersOverCap  # the parser stops; uvicorn calls send_400_response

    def _message_headers_over_cap(self) -> bool:
        return self.policy is not None and self._message_header_bytes > self.policy.max_header_bytes

    def _refuse(
        self, status: int, message: str, error_type: str, *, reason: str, limit: str | None = None, limit_value=None,
        linger: bool = True,
    ) -> None:
        """Answer ``status`` without the app, close the connection, and count it under ``reason``;
        after the answers owed to requests parsed before the refused bytes, if any."""
        self._stop_awaiting()
        refusal = Refusal(status, message, reason,
                          refusal_bytes(status, message, error_type, limit=limit, limit_value=limit_value), linger)
        if not self._answers_owed():
            self._send_refusal(refusal)
        elif self._held_refusal is None:  # the first refusal is the one the client gets
            self._held_refusal = refusal
            self.flow.pause_reading()
            self._unqueue_refused_request()

    def _answers_owed(self) -> bool:
        """Whether a request parsed before the refused bytes is still to be answered: one pipelined
        before the last, or the last if its body was read whole (the refused bytes then come after it)."""
        if any(not cycle.response_complete for cycle in self._earlier_cycles):
            return True
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _unqueue_refused_request(self) -> None:
        """A pipelined request whose body holds the refused bytes is not run: the refusal, sent
        after the answers before it, is its answer."""
        cycle = self.cycle
        pipeline = getattr(self, "pipeline", None)  # httptools' queue of pipelined requests (h11 has none)
        if cycle is not None and cycle.more_body and pipeline:
            for entry in list(pipeline):
                if entry[0] is cycle:
                    pipeline.remove(entry)

    def _send_refusal(self, refusal: Refusal) -> None:
        self._held_refusal = None
        if self.policy is not None:
            self.policy.on_refused(refusal.reason)
        log.warning("%s refused with %d: %s", self._client_name, refusal.status, refusal.message)  # rate-limited
        self.transport.write(refusal.response)
        if not refusal.linger and isinstance(self.transport, LingeringTransport):
            self.transport.close_at_once()
        else:
            self.transport.close()
