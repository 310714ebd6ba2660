"""A small HTTP/1.1 server connection for the HTTP fallback: requests parsed by httptools
(llhttp, the parser uvicorn uses), answered one at a time, kept alive.

An answer is either whole (``respond``) or a chunked stream (``begin_stream``, ``send_chunk``,
``end_stream``) that may last as long as the session it carries. Requests that arrive while one
is being answered wait their turn (reading stops past a few). Limits keep a client from holding
memory or the connection: the request line and headers (MAX_HEAD), the body (``max_body``:
413), the time to send a whole request (REQUEST_TIMEOUT: 408) and to start the next one on an
idle kept-alive connection (IDLE_TIMEOUT). Nothing here knows about Pusher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

import httptools

MAX_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
# Requests parsed ahead of the one being answered before reading stops.
MAX_QUEUED = 4


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "peer", "keep_alive")

    def __init__(self, method: str, url: bytes, headers: dict[str, str], body: bytes,
                 peer: str, keep_alive: bool) -> None:
        path, _, query = url.decode("latin-1").partition("?")
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # names lower-cased; the first of repeated headers
        self.body = body
        self.peer = peer
        self.keep_alive = keep_alive


Handler = Callable[[Request, "HttpConnection"], None]
Headers = list[tuple[str, str]]


class HttpConnection(asyncio.Protocol):
    """One client's TCP connection. ``owner`` is told (``receiver_lost``) when a connection
    that was carrying its answer goes away."""

    __slots__ = ("_handler", "_max_body", "_tr", "_parser", "peer", "_url", "_headers",
                 "_body", "_head_size", "_queue", "_busy", "_keep_alive", "_timer", "closed",
                 "owner", "_paused", "_reading")

    def __init__(self, handler: Handler, max_body: int) -> None:
        self._handler = handler
        self._max_body = max_body
        self._tr: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._head_size = 0
        self._queue: deque[Request] = deque()
        self._busy = False
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.owner: object | None = None
        self._paused = False
        self._reading = False  # a request has begun and is not complete yet

    # ----------------------------------------------------------------- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tr = transport  # type: ignore[assignment] # uvloop's is not an asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self._arm(REQUEST_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPStatus.BAD_REQUEST, "Upgrade is not served on this path.")
        except httptools.HttpParserError as exc:
            if not self.closed:
                self._fail(HTTPStatus.BAD_REQUEST, f"Malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.receiver_lost(self)  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = {}
        self._body.clear()
        self._head_size = 0
        self._reading = True
        if not self._busy:
            self._arm(REQUEST_TIMEOUT)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value))
        self._headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"The body is larger than {self._max_body} bytes.")

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        self._body += body
        if len(self._body) > self._max_body:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"The body is larger than {self._max_body} bytes.")

    def on_message_complete(self) -> None:
        self._reading = False
        if self.closed:
            return
        self._queue.append(Request(
            self._parser.get_method().decode("latin-1"), bytes(self._url), self._headers,
            bytes(self._body), self.peer, self._parser.should_keep_alive(),
        ))
        if len(self._queue) > MAX_QUEUED and self._tr is not None and not self._paused:
            self._paused = True
            self._tr.pause_reading()
        self._next()

    # ----------------------------------------------------------------- answers

    def respond(self, status: int, body: bytes = b"", headers: Headers | None = None) -> None:
        """A whole answer; the connection then serves the next request (or closes)."""
        head = self._head(status, headers or [])
        self._write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self._done()

    def begin_stream(self, headers: Headers, first: bytes = b"") -> None:
        head = self._head(HTTPStatus.OK, headers) + b"Transfer-Encoding: chunked\r\n\r\n"
        self._write(head + (_chunk(first) if first else b""))

    def send_chunk(self, data: bytes) -> None:
        if data:
            self._write(_chunk(data))

    def end_stream(self, last: bytes = b"") -> None:
        self._write((_chunk(last) if last else b"") + b"0\r\n\r\n")
        self._done()

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        tr = self._tr
        return tr.get_write_buffer_size() if tr is not None and not self.closed else 0

    def set_write_buffer_limits(self, high: int) -> None:
        if self._tr is not None:
            self._tr.set_write_buffer_limits(high=high)

    def abort(self) -> None:
        if self._tr is not None and not self.closed:
            self._tr.abort()

    # ----------------------------------------------------------------- internals

    def _next(self) -> None:
        if self._busy or not self._queue or self.closed:
            return
        request = self._queue.popleft()
        if self._paused and len(self._queue) <= MAX_QUEUED // 2 and self._tr is not None:
            self._paused = False
            self._tr.resume_reading()
        self._busy = True
        self._keep_alive = request.keep_alive
        self._disarm()
        self._handler(request, self)

    def _done(self) -> None:
        self._busy = False
        self.owner = None
        if not self._keep_alive:
            self._close()
            return
        self._arm(IDLE_TIMEOUT)
        self._next()

    def _head(self, status: int, headers: Headers) -> bytes:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if not self._keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def _write(self, data: bytes) -> None:
        if self._tr is not None and not self.closed:
            self._tr.write(data)

    def _grow_head(self, n: int) -> None:
        self._head_size += n
        if self._head_size > MAX_HEAD:
            self._fail(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                       f"The request line and headers are larger than {MAX_HEAD} bytes.")

    def _fail(self, status: int, message: str) -> None:
        """A request we will not read further: answer it, then close."""
        if self.closed:
            return
        self._keep_alive = False
        if not self._busy:
            body = error_body(status, message)
            self._write(self._head(status, [("Content-Type", "application/json")])
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self._close()

    def _close(self) -> None:
        if self._tr is not None and not self.closed:
            self.closed = True
            self._disarm()
            self._tr.close()

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._busy:
            return
        if self._reading:
            self._fail(HTTPStatus.REQUEST_TIMEOUT, "The request took too long to arrive.")
        else:
            self._close()  # an idle kept-alive connection


def error_body(status: int, message: str) -> bytes:
    """The JSON body of an error answer, as the API and /ready write them."""
    return f'{{"error":{encode_basestring_ascii(message)},"code":{int(status)}}}'.encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
