"""A resuming subscriber (docs/resume.md): the events it missed, from the channel's log,
before it joins the channel's live fan-out.

The subscriber is answered first (``subscription_succeeded`` at its own serial), then sent the
log's events after that serial page by page, waiting for its connection to drain between pages
so that a long replay never trips the slow-subscriber cut-off. It joins the channel in the same
loop turn as the check that it has everything the node delivered: from then on it gets the
live events like any subscriber, so nothing falls between the replay and the fan-out, and
nothing comes twice. When the log does not continue from its serial (the chain of serials says
so, gateway/protocol/resume.py), it gets ``clarion:resume_failed`` instead and joins at the
channel's current position.

Clients come back together (a node restarted under thousands of them): the ones resuming on
one channel mostly ask for the same page of its log at the same moment, so those reads are
shared (``SharedReads``), and a read that fails while Redis is swamped is tried again before
the subscription is given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import structlog

from gateway.protocol import frames
from gateway.protocol.messages import ResumeRequest
from gateway.protocol.resume import UNAVAILABLE, failure
from gateway.state.history import History, LogEntry
from gateway.ws import framing

if TYPE_CHECKING:
    from gateway.ws.hub import Channel, Hub, Subscriber

log = structlog.get_logger("clarion.ws.resume")

# Log events read and sent per step.
PAGE = 500
# How long a node that is behind the client's serial (the client came from a node further
# ahead) may take to catch up before the resume is decided.
REACH_WAIT = 3.0
# How long a replay waits for a subscriber to read what it was sent before the next page.
DRAIN_WAIT = 10.0
# A log read that fails is tried again after these delays (seconds) before giving up.
READ_RETRIES = (0.1, 0.4, 1.0)

Answer = Callable[[int | None, str | None], None]
T = TypeVar("T")


async def replay(hub: Hub, conn: Subscriber, ch: Channel, resume: ResumeRequest,
                 on_added: Answer) -> bool:
    """Answer ``conn``, send it the events after ``resume.serial``, join it to ``ch``;
    False if the connection closed meanwhile."""
    after = resume.serial or 0
    await _reach(hub, ch, after)
    page = await _page(hub, ch, after)
    position = ch.last or 0
    if conn.closed:
        return False
    reason = failure(after, position, page)
    if reason is not None:
        return hub.join(conn, ch, tracked=True, on_added=on_added, position=position,
                        failure=reason)
    on_added(after, None)
    cursor = after
    while True:
        cursor = _send(conn, ch, page, resume.socket_id, cursor)
        if cursor >= (ch.last or 0):
            return hub.join(conn, ch, tracked=True)
        await _drained(conn)
        try:
            page = await _page(hub, ch, cursor)
        except Exception as exc:  # Redis unreachable: say so rather than leave a hole
            log.warning("replay_read_failed", channel=ch.name, error=str(exc))
            page, reason = [], UNAVAILABLE
        else:
            reason = failure(cursor, ch.last or 0, page)
        if conn.closed:
            return False
        if reason is not None:
            conn.enqueue(framing.text(frames.resume_failed(ch.name, reason, cursor)))
            return hub.join(conn, ch, tracked=True)


async def _reach(hub: Hub, ch: Channel, after: int) -> None:
    """A node behind the client's serial catches up to it (from the log) before deciding:
    else it would send the client events it already has."""
    if ch.last is None or ch.last >= after:
        return
    current = await hub.history.current_serial(ch.app_id, ch.name)
    if current > ch.last and hub.sequencer is not None:
        hub.sequencer.reconcile(ch, current)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REACH_WAIT
    while (ch.last or 0) < min(after, current) and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def _page(hub: Hub, ch: Channel, after: int) -> list[LogEntry]:
    """The log's first events after ``after``, up to what the node has delivered."""
    upto = ch.last or 0
    if upto <= after:
        return []
    return await retrying(lambda: hub.log_reads.since(ch.app_id, ch.name, after, upto))


async def retrying(read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, tried again after each of READ_RETRIES if it fails (Redis swamped by a
    crowd reconnecting at once), then its error."""
    for delay in READ_RETRIES:
        try:
            return await read()
        except Exception as exc:
            log.info("read_retry", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
    return await read()


class SharedReads:
    """Log pages read for replays, one Redis read for everyone who asks for the same page at
    the same time (the result is shared and must not be changed)."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._reads: dict[tuple[str, str, int, int], asyncio.Future[list[LogEntry]]] = {}

    async def since(self, app_id: str, channel: str, after: int, upto: int) -> list[LogEntry]:
        key = (app_id, channel, after, upto)
        read = self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(
                self.history.since(app_id, channel, after, upto, PAGE))
            self._reads[key] = read
            read.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(read)


def _send(conn: Subscriber, ch: Channel, page: list[LogEntry], excluded: str | None,
          cursor: int) -> int:
    """Queue ``page`` (up to what the node delivered) on ``conn``, at most what it has room
    for (one event at least); the last serial passed."""
    upto, room, sent = ch.last or 0, conn.room(), False
    for entry in page:
        if entry.serial > upto or (room <= 0 and sent):
            break
        cursor, sent = entry.serial, True
        if excluded is not None and entry.exclude == excluded:
            continue  # the client's previous connection published it: it is not for it
        frame = framing.text(frames.channel_event(
            entry.event, ch.name, entry.data, serial=entry.serial))
        conn.enqueue(frame)
        room -= len(frame)
    return cursor


async def _drained(conn: Subscriber) -> None:
    """Until the subscriber has room again (it is reading), or DRAIN_WAIT: a subscriber that
    does not read is cut off by the usual slow-subscriber rule."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_WAIT
    await asyncio.sleep(0)  # let the flush of the last step happen first
    while not conn.closed and conn.room() <= 0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
