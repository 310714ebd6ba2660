"""One pusher-js HTTP socket (a session id): the transport its Connection writes through.

The Connection (gateway/ws/connection.py) does not know it is not on a WebSocket: it writes the
same frames, and this session re-frames them (wire.py) for whichever request of its client is
carrying answers at the moment, its *receiver*:

* a stream (xhr_streaming): one chunked response, written to as output comes. Once its client
  has read more than MAX_STREAM_BYTES on it, pusher-js drops it and opens the next one; the
  session stops writing to it at that point (output waits for the next stream) so that nothing
  is written into a response the client is about to abandon.
* a poll (xhr): answered with everything pending as soon as there is something, then done; the
  client polls again at once.

Output that finds no receiver waits in ``pending`` and counts towards the Connection's
slow-subscriber cut-off like a WebSocket's unsent bytes. Liveness (``tick``, from the node's
sweep): a receiver that carried nothing for ``heartbeat`` seconds gets ``h`` (a poll is answered
with it); a session with no receiver for ``timeout`` seconds is closed like a dropped socket; a
client that drops its receiver closes it at once (pusher-js only ever drops one when it is done
with the session, or with a stream it has read to the limit).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from gateway.ws.xhr import wire
from gateway.ws.xhr.http11 import Headers, HttpConnection

if TYPE_CHECKING:
    from gateway.ws.connection import Connection

# A stream read to the limit that its client has not closed after this long is closed by us.
SPENT_GRACE = 10.0
ANOTHER_RECEIVER = wire.close_line(2010, "Another connection still open")


class Registry(Protocol):
    def closed(self, session: HttpSession) -> None: ...


class HttpSession:
    __slots__ = ("key", "peer", "conn", "_registry", "_reframe", "pending", "_pending_size",
                 "receiver", "_headers", "streaming", "_stream_bytes", "_spent", "_spent_at",
                 "since", "closed", "close_line", "_high", "_answer_due")

    def __init__(self, key: tuple[str, str], peer: str, conn: Connection, registry: Registry,
                 reframe: wire.Reframer, now: float) -> None:
        self.key = key
        self.peer = peer
        self.conn = conn
        self._registry = registry
        self._reframe = reframe
        self.pending: list[bytes] = [wire.OPEN]
        self._pending_size = len(wire.OPEN)
        self.receiver: HttpConnection | None = None
        self._headers: Headers = []
        self.streaming = False
        self._stream_bytes = 0
        self._spent: HttpConnection | None = None
        self._spent_at = 0.0
        # When the receiver was attached (a poll), last written to (a stream), or detached.
        self.since = now
        self.closed = False
        self.close_line = b""
        self._high: int | None = None
        self._answer_due = False

    # ----------------------------------------------------------------- the Connection's side

    @property
    def is_close_frame_sent(self) -> bool:
        return False

    def disconnect(self, graceful: bool = True) -> None:
        self.finish()

    def write(self, data: bytes) -> None:
        """WebSocket frames from the Connection (its flush)."""
        if self.closed:
            return
        lines = self._reframe(data)
        self.close_line = wire.close_of(lines) or self.close_line
        self._out(lines, asyncio.get_running_loop().time())

    def get_write_buffer_size(self) -> int:
        receiver = self.receiver
        return self._pending_size + (receiver.buffered() if receiver is not None else 0)

    def is_closing(self) -> bool:
        return self.closed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = high

    # ----------------------------------------------------------------- the client's requests

    def attach(self, http: HttpConnection, streaming: bool, headers: Headers,
               now: float) -> None:
        """A receive request (xhr_streaming or xhr) for this session."""
        if self.closed:
            http.respond(200, self.close_line or wire.close_line(3000, "Go away!"), headers)
            return
        if self.receiver is not None:
            http.respond(200, ANOTHER_RECEIVER, headers)
            return
        self.conn.alive()
        self._drop_spent()
        self.receiver, self._headers, self.streaming, self.since = http, headers, streaming, now
        http.owner = self
        if self._high is not None:
            http.set_write_buffer_limits(self._high)
        if streaming:
            self._stream_bytes = 0
            http.begin_stream(headers + [("X-Accel-Buffering", "no")])
            if self.pending:
                self._stream(self._take(), now)
        elif self.pending and not self._answer_due:
            # Answered on the next loop turn, with what the hub flushes meanwhile.
            self._answer_due = True
            asyncio.get_running_loop().call_soon(self._answer_poll)

    def receive(self, messages: list[bytes]) -> None:
        """An xhr_send's messages (none: pusher-js's heartbeat, a sign of life only)."""
        conn = self.conn
        conn.alive()
        for message in messages:
            if self.closed:
                return
            conn.receive(message)

    def receiver_lost(self, http: HttpConnection) -> None:
        """``http``'s TCP connection closed (HttpConnection.connection_lost)."""
        if http is self._spent:
            self._spent = None
        elif http is self.receiver:
            self.receiver = None
            self.finish()

    # ----------------------------------------------------------------- liveness

    def tick(self, now: float, heartbeat: float, timeout: float) -> None:
        if self.closed:
            return
        if self._spent is not None and now - self._spent_at >= SPENT_GRACE:
            self._drop_spent()
        receiver = self.receiver
        if receiver is None:
            if now - self.since >= timeout:
                self.finish()
        elif now - self.since >= heartbeat:
            self._out(wire.HEARTBEAT, now)

    def finish(self) -> None:
        """The session is over (closed by the node, reaped, or its client left): the last
        output to the receiver, if any, then the Connection leaves everything it held."""
        if self.closed:
            return
        self.closed = True
        receiver, self.receiver = self.receiver, None
        if receiver is not None and not receiver.closed:
            rest = self._take()
            if self.streaming:
                receiver.end_stream(rest)
            else:
                receiver.respond(200, rest or self.close_line or wire.HEARTBEAT, self._headers)
        self._drop_spent()
        self.pending = []
        self._pending_size = 0
        self.conn.gone()
        self._registry.closed(self)

    # ----------------------------------------------------------------- output

    def _out(self, lines: bytes, now: float) -> None:
        receiver = self.receiver
        if receiver is None or not self.streaming:
            self.pending.append(lines)
            self._pending_size += len(lines)
            if receiver is not None:
                self._answer_poll()
            return
        self._stream(lines, now)

    def _stream(self, lines: bytes, now: float) -> None:
        receiver = self.receiver
        assert receiver is not None
        receiver.send_chunk(lines)
        self.since = now
        self._stream_bytes += len(lines)
        if self.close_line and lines.endswith(self.close_line):
            self.finish()
        elif self._stream_bytes > wire.MAX_STREAM_BYTES:
            # pusher-js opens the next stream as soon as it has read this one.
            self._spent, self._spent_at = receiver, now
            self.receiver, self.since = None, now

    def _answer_poll(self) -> None:
        self._answer_due = False
        receiver = self.receiver
        if receiver is None or self.streaming or not self.pending or self.closed:
            return
        body = self._take()
        self.receiver = None
        self.since = asyncio.get_running_loop().time()
        receiver.respond(200, body, self._headers)
        if self.close_line and body.endswith(self.close_line):
            self.finish()

    def _take(self) -> bytes:
        pending = self.pending
        self.pending, self._pending_size = [], 0
        return pending[0] if len(pending) == 1 else b"".join(pending)

    def _drop_spent(self) -> None:
        spent, self._spent = self._spent, None
        if spent is not None:
            spent.owner = None
            spent.abort()
