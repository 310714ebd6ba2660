"""A small HTTP/1.1 client for many small POSTs to one origin: keep-alive connections on the
provider loop, one request at a time each, responses parsed by httptools (llhttp, in C).

Why not aiohttp for FCM: per request, aiohttp's Python (request and response objects, the
connector, timers, header handling) cost about half of the worker's CPU per notification in
the benchmark; this client writes one prebuilt ``bytes`` per request and parses the answer in
C, for a fraction of that. It does only what FCM sends need: POST with a complete body,
``Content-Length`` or chunked answers, ``Connection: close`` honoured, no redirects, no proxy
(with a proxy configured the FCM sender uses aiohttp), no compression (none is asked for).

A request whose caller gives up (cancelled, e.g. by its timeout) closes its connection: the
answer may still come, and a connection is never reused with an answer in flight.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.parse
from collections import deque
from collections.abc import Mapping

import httptools


class Response:
    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


class _Headers(dict[str, str]):
    """Response headers by lower-case name (``get("Retry-After")`` works too)."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self._reason = ""
        self._headers = _Headers()
        self._body: list[bytes] = []
        self._name = ""

    # asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        self._fail(exc or ConnectionError("the server closed the connection"))

    # httptools
    def on_status(self, status: bytes) -> None:
        self._reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), self._reason, self._headers,
                            b"".join(self._body))
        keep = self.parser.should_keep_alive()
        self._reset()
        waiter, self.waiter = self.waiter, None
        if not keep:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if keep:
            self.pool.release(self)

    # the pool's side
    def request(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.waiter = self.pool.loop.create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if not self.closed:
            self._gone()
            if self.transport is not None:
                self.transport.close()

    def _gone(self) -> None:
        """Leave the pool (once)."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not self.closed:
            self.close()


class Http1Pool:
    """Up to ``limit`` keep-alive connections to the origin of ``url``; use on ``loop`` only."""

    def __init__(self, url: str, limit: int, loop: asyncio.AbstractEventLoop,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        default_port = (443 if self.https else 80) == self.port
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl = (ssl_context or ssl.create_default_context()) if self.https else None
        self.limit = limit
        self.loop = loop
        self._idle: deque[_Connection] = deque()
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[_Connection]] = deque()

    def head(self, headers: Mapping[str, str]) -> bytes:
        """The start of a POST to the pool's URL with ``headers`` (Host and Content-Length
        added per request by :meth:`post`): build it once, use it for many requests."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    async def post(self, head: bytes, body: bytes) -> Response:
        conn = await self._acquire()
        waiter = conn.request(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        try:
            return await waiter
        except BaseException:
            conn.close()  # given up or failed with the answer in flight: never reused
            raise

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed:
                return conn
        if self._open < self.limit:
            self._open += 1
            try:
                return await self._connect()
            except BaseException:
                self._open -= 1
                self._wake()
                raise
        waiter: asyncio.Future[_Connection] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we gave up: pass it on
            raise

    async def _connect(self) -> _Connection:
        _, conn = await self.loop.create_connection(
            lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
            server_hostname=self.host if self.https else None,
        )
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: _Connection) -> None:
        """A connection whose answer is complete: to a waiting request, else idle."""
        if conn.closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection closed: its place may be taken by a new one."""
        self._open -= 1
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._wake()

    def _wake(self) -> None:
        """Let one waiting request open a connection in a freed place."""
        while self._waiters and self._open < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                task = self.loop.create_task(self._connect())
                task.add_done_callback(lambda t, w=waiter: self._handover(t, w))
                return

    def _handover(
        self, task: asyncio.Task[_Connection], waiter: asyncio.Future[_Connection]
    ) -> None:
        if task.cancelled() or task.exception() is not None:
            self._open -= 1
            if not waiter.done():
                waiter.set_exception(task.exception() or ConnectionError("connect cancelled"))
            return
        conn = task.result()
        if waiter.done():
            self.release(conn)
        else:
            waiter.set_result(conn)

    def close(self) -> None:
        for conn in list(self._idle):
            conn.close()
