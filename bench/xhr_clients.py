"""Cheap load clients for bench/xhr_bench.py, one asyncio protocol per connection (uvloop):
WebSocket subscribers and pusher-js's HTTP transports done by hand (docs/http-fallback.md).

Every client subscribes to one public channel and counts the bench events it receives
(``b:<lane>:<seq>:<monotonic_ns>``, bench/events.py) with their latency. The xhr_streaming
client answers heartbeats as pusher-js does (``[]``); the xhr_polling client polls again as soon
as a poll is answered, over one kept-alive connection (as a browser does).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time

from bench.wsframes import PUSHER_QUERY, Endpoint, subscribe_frame, upgrade_request

_EVENT = re.compile(rb"b:(\d+):(\d+):(\d+)")


class Counter:
    """What all clients of one process received since ``arm``."""

    def __init__(self) -> None:
        self.arm()
        self.ready = 0
        self.polls = 0

    def arm(self) -> None:
        self.deliveries = 0
        self.latencies: list[int] = []
        self.last_ns = 0
        self.polls = 0

    def seen(self, data: bytes) -> None:
        now = time.monotonic_ns()
        for match in _EVENT.finditer(data):
            self.deliveries += 1
            self.latencies.append(now - int(match.group(3)))
            self.last_ns = now


class WsClient(asyncio.Protocol):
    def __init__(self, counter: Counter, host: str, port: int, key: str, channel: str) -> None:
        self.counter, self.channel = counter, channel
        self.request = upgrade_request(Endpoint(host, port, f"/app/{key}?{PUSHER_QUERY}"))
        self.tr: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False

    def connection_made(self, transport) -> None:
        self.tr = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            head, sep, rest = (self.buf + data).partition(b"\r\n\r\n")
            if not sep:
                self.buf = head
                return
            self.upgraded, self.buf, data = True, b"", rest
            self.tr.write(subscribe_frame(self.channel))
        # Count only up to the end of the last whole message: a read may split one.
        data, self.buf = self.buf + data, b""
        end = data.rfind(b"}")
        data, self.buf = data[:end + 1], data[end + 1:]
        if b"subscription_succeeded" in data:
            self.counter.ready += 1
        self.counter.seen(data)


class HttpClient(asyncio.Protocol):
    """One pusher-js HTTP socket's receive side (a stream, or polls one after another)."""

    def __init__(self, counter: Counter, host: str, port: int, key: str, channel: str,
                 streaming: bool) -> None:
        self.counter, self.channel, self.streaming = counter, channel, streaming
        self.host, self.port = host, port
        sid = f"{secrets.randbelow(1000)}/{secrets.token_hex(4)}"
        self.base = f"/pusher/app/{key}/{sid}"
        self.tr: asyncio.Transport | None = None
        self.buf = b""
        self.opened = False

    def _post(self, path: str, body: bytes = b"") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    def receive_request(self) -> bytes:
        kind = "xhr_streaming" if self.streaming else "xhr"
        return self._post(f"{self.base}/{kind}?{PUSHER_QUERY}")

    def connection_made(self, transport) -> None:
        self.tr = transport
        transport.write(self.receive_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.streaming:
            self._stream()
        else:
            self._poll()

    def _stream(self) -> None:
        buf = self.buf
        if not self.opened:
            at = buf.find(b"\r\n\r\n")
            if at < 0:
                return
            buf, self.opened = buf[at + 4:], True
        while True:  # chunked: each chunk holds whole lines
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            self._lines(buf[eol + 2:eol + 2 + size])
            buf = buf[eol + 2 + size + 2:]
        self.buf = buf

    def _poll(self) -> None:
        at = self.buf.find(b"\r\n\r\n")
        if at < 0:
            return
        head = self.buf[:at].lower()
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        if len(self.buf) < at + 4 + length:
            return
        body, self.buf = self.buf[at + 4:at + 4 + length], self.buf[at + 4 + length:]
        self.counter.polls += 1
        self._lines(body)
        self.tr.write(self.receive_request())

    def _lines(self, data: bytes) -> None:
        if b"connection_established" in data:
            sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": self.channel}})
            asyncio.ensure_future(self.send(json.dumps([sub]).encode()))
        if b"subscription_succeeded" in data:
            self.counter.ready += 1
        if data.startswith(b"h") or b"\nh\n" in data:
            if self.streaming:
                asyncio.ensure_future(self.send(b"[]"))
        self.counter.seen(data)

    async def send(self, body: bytes) -> None:
        """One xhr_send on a connection of its own, as pusher-js's Node build does."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(self._post(f"{self.base}/xhr_send?t={time.time_ns()}", body))
        await reader.readuntil(b"\r\n\r\n")
        writer.close()


async def open_clients(counter: Counter, kind: str, count: int, host: str, port: int,
                       key: str, channel: str) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    transports = []
    target = counter.ready + count

    def factory() -> asyncio.Protocol:
        if kind == "ws":
            return WsClient(counter, host, port, key, channel)
        return HttpClient(counter, host, port, key, channel, kind == "xhr_streaming")

    for _ in range(count):
        transport, _ = await loop.create_connection(factory, host, port)
        transports.append(transport)
    deadline = time.monotonic() + 60
    while counter.ready < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if counter.ready < target:
        raise RuntimeError(f"only {counter.ready} of {target} {kind} clients subscribed")
    return transports


def client_process(conn, host: str, port: int, key: str) -> None:
    """The clients' process: commands from the bench over a Pipe."""
    import uvloop

    os.nice(0)
    counter = Counter()
    groups: dict[str, list[asyncio.Transport]] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        while True:
            op, args = await loop.run_in_executor(None, conn.recv)
            if op == "open":
                groups[args["kind"]] = await open_clients(
                    counter, args["kind"], args["count"], host, port, key, args["channel"])
                conn.send({"ok": True})
            elif op == "arm":
                counter.arm()
                conn.send({"ok": True})
            elif op == "stats":
                conn.send({"deliveries": counter.deliveries, "last_ns": counter.last_ns,
                           "latencies": counter.latencies, "polls": counter.polls,
                           "cpu": time.process_time()})
            elif op == "close":
                for tr in groups.pop(args["kind"], []):
                    tr.abort()
                conn.send({"ok": True})
            elif op == "quit":
                conn.send({"ok": True})
                return

    uvloop.run(main())
