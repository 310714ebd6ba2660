"""One port, two servers: the first request line of each TCP connection says who serves it.

picows serves WebSockets and answers small GETs (/ready), but it refuses any request with a
body and closes after every plain answer, so it cannot carry pusher-js's HTTP transports (POSTs,
one of them a response that lasts as long as the session). A connection whose first request
targets ``/pusher/`` (pusher-js's default httpPath) is handed to gateway/ws/xhr's HTTP/1.1
server; every other one to picows, exactly as if picows had accepted it (the transport and the
bytes read so far). After the hand-off the switch is gone: a WebSocket costs nothing more per
frame, only one extra Python call when it connects (bench/results, docs/http-fallback.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from picows import WSAutoPingStrategy
from picows.picows import WSProtocol

from gateway.ws.xhr.wire import HTTP_PATH

# The request line must arrive within this time, and fit in this many bytes (picows' limit
# for a whole upgrade request; longer lines go to picows, which refuses them).
FIRST_LINE_TIMEOUT = 5.0
MAX_FIRST_LINE = 16 * 1024
_HTTP_PREFIX = HTTP_PATH.encode() + b"/"

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def picows_factory(listener_factory: Callable[..., Any], *, logger: logging.LoggerAdapter[Any],
                   max_frame_size: int, read_buffer_init_size: int,
                   handshake_timeout: float) -> ProtocolFactory:
    """picows' server protocol, built as ``picows.ws_create_server`` builds it (picows 2.x):
    the node's options, no auto-ping (the node pings), auto-pong on."""

    def factory() -> WSProtocol:
        return WSProtocol(
            None, None, False, listener_factory, logger, True, handshake_timeout,
            False, 20, 20, WSAutoPingStrategy.PING_WHEN_IDLE, True, max_frame_size, None,
            read_buffer_init_size,
        )

    return factory


class _Detached(asyncio.Protocol):
    """Set as the transport's protocol for a moment during a hand-off: uvloop keeps the last
    non-buffered protocol's ``data_received`` for as long as the transport lives (a bound
    method, which would keep the switch alive: 0.27 KB of every WebSocket). This one's is a
    plain function, shared by all."""


def _ignore(data: bytes) -> None:
    pass


_DETACHED = _Detached()
_DETACHED.data_received = _ignore  # type: ignore[method-assign]


class Waiting:
    """Connections whose first line has not come yet, aborted after FIRST_LINE_TIMEOUT by a
    sweep: a timer per connection cost ~20 us and 0.3 KB of every WebSocket's connect."""

    def __init__(self) -> None:
        self.since: dict[PortSwitch, float] = {}

    async def run(self, halted: Callable[[float], Awaitable[bool]]) -> None:
        while not await halted(1.0):
            self.sweep(asyncio.get_running_loop().time())

    def sweep(self, now: float) -> None:
        late = [s for s, t in self.since.items() if now - t >= FIRST_LINE_TIMEOUT]
        for switch in late:
            self.since.pop(switch, None)
            switch.abort()


class PortSwitch(asyncio.Protocol):
    __slots__ = ("_ws", "_http", "_waiting", "_tr", "_buf")

    def __init__(self, ws: ProtocolFactory, http: ProtocolFactory, waiting: Waiting) -> None:
        self._ws = ws
        self._http = http
        self._waiting = waiting
        self._tr: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tr = transport  # type: ignore[assignment] # uvloop's is not an asyncio.Transport
        self._waiting.since[self] = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n")
        if end < 0 and len(buf) < MAX_FIRST_LINE:
            self._buf = buf
            return
        self._buf = b""
        parts = buf[:end].split(b" ", 2) if end >= 0 else []
        http = len(parts) == 3 and parts[1].startswith(_HTTP_PREFIX)
        self._hand_over(self._http() if http else self._ws(), buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.since.pop(self, None)

    def abort(self) -> None:
        if self._tr is not None:
            self._tr.abort()

    def _hand_over(self, protocol: asyncio.BaseProtocol, data: bytes) -> None:
        assert self._tr is not None
        self._waiting.since.pop(self, None)
        tr, self._tr = self._tr, None
        tr.set_protocol(_DETACHED)
        tr.set_protocol(protocol)
        protocol.connection_made(tr)
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view and not tr.is_closing():
                buf = protocol.get_buffer(len(view))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(data)
