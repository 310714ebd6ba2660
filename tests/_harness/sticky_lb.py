"""A load balancer in front of several nodes, sticky by pusher-js's HTTP session id, as
docs/http-fallback.md asks of a real one (nginx, HAProxy): every request of one session
(/pusher/app/{key}/{server}/{session}/...) goes to the node that got the session's first
request, new sessions and everything else round robin.

It routes per TCP connection (reads the first request line, then splices bytes both ways),
which is per request for pusher-js's Node build: its XMLHttpRequest opens a connection for each
request. Runs its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading

_SESSION = re.compile(rb"^[A-Z]+ /pusher/app/[^/]+/([^/]+/[^/]+)/")


class StickyBalancer:
    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.sessions: dict[bytes, int] = {}  # session id -> upstream port
        self._next = itertools.cycle(upstreams)
        self._loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None

    def start(self) -> StickyBalancer:
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(5), "the balancer did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def pick(self, first_line: bytes) -> int:
        match = _SESSION.match(first_line)
        if match is None:
            return next(self._next)
        session = match.group(1)
        if session not in self.sessions:
            self.sessions[session] = next(self._next)
        return self.sessions[session]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readuntil(b"\r\n")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.pick(first))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        up_writer.write(first)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
