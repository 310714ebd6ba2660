"""Signed Pusher REST calls over keep-alive HTTP/1.1 connections ("lanes").

A lane is one connection whose requests are strictly sequential, so the order in which a lane
publishes is an order the server must keep. Requests are signed with Clarion's own
``sign_rest_request`` (works for non-numeric app ids such as soketi's "app-id").
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from bench.events import EVENT_NAME, MAX_LANES, event_data
from bench.wsframes import require_local
from gateway.protocol.signatures import sign_rest_request


@dataclass(frozen=True)
class App:
    http_url: str
    app_id: str
    key: str
    secret: str


@dataclass
class Response:
    status: int
    body: bytes
    seconds: float


class HttpConnection:
    """A minimal HTTP/1.1 client: Content-Length or chunked bodies, reconnects when closed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def request(self, method: str, target: str, body: bytes = b"") -> Response:
        started = time.perf_counter()
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                await self._connect()
            try:
                self.writer.write(self._head(method, target, body) + body)
                status, payload, keep = await self._read_response()
                break
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                # A reused keep-alive connection may have been closed by the server just
                # before we wrote: retry once on a fresh one. A fresh one failing is real.
                if fresh or attempt == 2:
                    raise ConnectionError(f"HTTP {method} {target[:60]} failed: {exc!r}") from exc
                self.reconnects += 1
        if not keep:
            self.close()
        return Response(status, payload, time.perf_counter() - started)

    def _head(self, method: str, target: str, body: bytes) -> bytes:
        return (f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: keep-alive\r\n\r\n").encode()

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _read_response(self) -> tuple[int, bytes, bool]:
        status_line = await self.reader.readuntil(b"\r\n")
        if not status_line.strip():
            raise ConnectionError("empty status line")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        keep = headers.get("connection", "").lower() != "close" and status_line.startswith(
            b"HTTP/1.1")
        return status, body, keep

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class Lane:
    """One connection and its own sequence numbers."""

    def __init__(self, publisher: Publisher, index: int) -> None:
        self.publisher, self.index = publisher, index
        self.http = HttpConnection(publisher.host, publisher.port)
        self.next_seq = 0

    def _datas(self, count: int, padding: int) -> list[str]:
        first, self.next_seq = self.next_seq, self.next_seq + count
        return [event_data(self.index, seq, padding) for seq in range(first, first + count)]

    async def batch(self, channel: str, count: int, padding: int = 0) -> Response:
        events = [{"channel": channel, "name": EVENT_NAME, "data": d}
                  for d in self._datas(count, padding)]
        return await self.publisher.post("batch_events", {"batch": events}, self.http)

    async def batch_to(self, channels: list[str], padding: int = 0,
                       name: str = EVENT_NAME, extra: dict | None = None) -> Response:
        """One batch_events request: one event to each of ``channels`` (the lane's next
        sequence numbers, in that order; other names are warm-ups without one). ``extra``:
        more top-level body fields (an ``idempotency_key``)."""
        datas = (self._datas(len(channels), padding) if name == EVENT_NAME
                 else ["warmup"] * len(channels))
        events = [{"channel": ch, "name": name, "data": d}
                  for ch, d in zip(channels, datas, strict=True)]
        return await self.publisher.post("batch_events", {"batch": events, **(extra or {})},
                                         self.http)

    async def event(self, channel: str, padding: int = 0, name: str = EVENT_NAME,
                    extra: dict | None = None) -> Response:
        data = self._datas(1, padding)[0] if name == EVENT_NAME else "warmup"
        return await self.publisher.post("events", {"name": name, "channels": [channel],
                                                    "data": data, **(extra or {})}, self.http)


class Publisher:
    def __init__(self, app: App) -> None:
        parts = urlsplit(app.http_url)
        self.host = require_local(parts.hostname or "")
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.app = app

    def lanes(self, count: int) -> list[Lane]:
        if not 1 <= count <= MAX_LANES:
            raise ValueError(f"lanes must be 1..{MAX_LANES}")
        return [Lane(self, i) for i in range(count)]

    async def post(self, endpoint: str, payload: dict, http: HttpConnection) -> Response:
        path = f"{self.base}/apps/{self.app.app_id}/{endpoint}"
        body = json.dumps(payload, separators=(",", ":")).encode()
        params = sign_rest_request(self.app.key, self.app.secret, "POST", path, {}, body,
                                   int(time.time()))
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        return await http.request("POST", f"{path}?{query}", body)

    async def probe(self, channel: str = "bench-probe") -> Response:
        """One signed event, used to check that the API accepts our credentials."""
        http = HttpConnection(self.host, self.port)
        try:
            return await self.post("events", {"name": "probe", "channels": [channel],
                                              "data": "probe"}, http)
        finally:
            http.close()
