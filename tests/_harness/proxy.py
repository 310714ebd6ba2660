"""A TCP proxy in front of WebSocket nodes, for connection faults the tests choose the time of.

It stands where a load balancer stands: clients connect to ``proxy.port``; each connection is
forwarded to the first upstream port that accepts it (a node that is down refuses, so
connections fail over to the next one, as behind a load balancer with health checks). The test
can cut every proxied connection at once (both sides closed with a reset, as when a network
path or a node goes away), refuse new connections (the listening socket is closed: clients get
"connection refused") and accept them again.

With ``health_check=True`` it also does what a load balancer's health check does: it reads
every upstream's ``GET /ready`` every HEALTH_INTERVAL and forwards new connections to the
upstreams that answered 200 (a draining node answers 503), to the others only when none did.

It runs on an asyncio loop in a thread of its own; its methods are called from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from gateway.embedded_redis import free_port

HEALTH_INTERVAL = 0.1


class Proxy:
    def __init__(self, upstreams: list[int], host: str = "127.0.0.1",
                 health_check: bool = False) -> None:
        self.upstreams = list(upstreams)
        self.host = host
        self.health_check = health_check
        self.healthy = set(self.upstreams)
        self._checker: asyncio.Task[None] | None = None
        self.port = free_port()
        self.accepted = 0  # connections forwarded since the start
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # ------------------------------------------------------------------ test thread

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        if self.health_check:
            self._checker = self._call(self._start_checker())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def drop_all(self) -> int:
        """Cut every proxied connection now; how many there were."""
        return self._call(self._drop_all())

    def refuse(self) -> None:
        """Stop listening: new connections are refused until ``allow``."""
        self._call(self._close_listener())

    def allow(self) -> None:
        self._call(self._listen())

    def cut(self) -> int:
        """Refuse new connections and cut the open ones (a network outage); ``allow`` ends it."""
        self.refuse()
        return self.drop_all()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ------------------------------------------------------------------ proxy loop

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _drop_all(self) -> int:
        pairs = list(self._pairs)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        return len(pairs)

    async def _start_checker(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._check_health())

    async def _check_health(self) -> None:
        while True:
            answers = await asyncio.gather(*(self._ready(port) for port in self.upstreams))
            self.healthy = {port for port, ok in zip(self.upstreams, answers, strict=True) if ok}
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _ready(self, port: int) -> bool:
        """Whether ``GET /ready`` on ``port`` answers 200 within a second."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, port), 1.0)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /ready HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 1.0)
            return status.split(b" ")[1:2] == [b"200"]
        except (OSError, TimeoutError):
            return False
        finally:
            writer.transport.abort()

    async def _shutdown(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
        await self._close_listener()
        await self._drop_all()
        # The pipes of the connections just dropped, ended here rather than destroyed pending
        # when the loop stops.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._open_upstream()
        if upstream is None:
            writer.transport.abort()
            return
        up_reader, up_writer = upstream
        pair = (writer, up_writer)
        self._pairs.add(pair)
        self.accepted += 1
        try:
            # Whichever side closes first closes the other: a node that dies drops its clients.
            await asyncio.wait(
                [asyncio.create_task(_pipe(reader, up_writer)),
                 asyncio.create_task(_pipe(up_reader, writer))],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        healthy = [port for port in self.upstreams if port in self.healthy]
        for port in healthy or self.upstreams:
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(self.host, port)
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
