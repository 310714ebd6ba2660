"""Local subscriptions and fan-out: (app, channel) -> subscribers, frames built once.

The hot path is ``deliver``: one Pusher frame (JSON + WebSocket header) per event, the same
bytes handed to every subscriber, appended to the subscriber's pending list. One
``loop.call_soon`` per loop turn flushes every subscriber that got something, with a single
``transport.write`` each, so a burst of events costs one syscall per subscriber, not one per
event. A subscriber whose kernel/transport buffer grows past ``max_write_buffer_bytes`` is cut
off there (4100), so it never slows the others.

Per channel the hub also keeps the ordering state the bus sequencer works on (``last`` serial
delivered, ``held`` events waiting for a gap to be filled); see gateway/ws/bus.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from gateway.protocol import frames
from gateway.protocol.messages import ResumeRequest
from gateway.protocol.names import USER_CHANNEL_PREFIX
from gateway.protocol.resume import EXPIRED, failure
from gateway.state.bus import BusEvent
from gateway.state.history import History
from gateway.ws import framing
from gateway.ws.resume import Answer, SharedReads, replay, retrying

if TYPE_CHECKING:
    from gateway.channels.membership import Membership
    from gateway.webhooks.reporter import Reporter
    from gateway.ws.bus import Sequencer
    from gateway.ws.occupancy import OccupancyWriter
    from gateway.ws.topics import Topics


class Subscriber(Protocol):
    """What the hub needs of a connection (gateway/ws/connection.py)."""

    socket_id: str
    app_id: str
    closed: bool

    def enqueue(self, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def room(self) -> int:
        """Bytes it can be sent now and stay well below its slow-subscriber cut-off."""
        ...


class Channel:
    __slots__ = ("app_id", "name", "subscribers", "last", "held", "joining", "membership",
                 "tracked", "baseline")

    def __init__(self, app_id: str, name: str) -> None:
        self.app_id = app_id
        self.name = name
        self.subscribers: dict[str, Subscriber] = {}
        # Last serial delivered; None while unknown (the first serial seen becomes the baseline).
        self.last: int | None = 0
        # Not None while the channel waits for its baseline or catches up from its log: bus
        # events are parked here, in arrival order, and delivered in serial order afterwards.
        self.held: list[BusEvent] | None = None
        # Subscribers still on their way in (the first one waiting for the baseline, resuming
        # ones being sent what they missed): keeps the entry alive even if every subscriber
        # leaves meanwhile.
        self.joining = 0
        # Socket ids of the subscribers that asked for positions (docs/resume.md): they get
        # each event's frame with its serial. None when there are none (the usual case).
        self.tracked: set[str] | None = None
        # Set while the first subscriber reads the channel's position (``last`` is not known
        # yet): subscribers that need the position wait for it.
        self.baseline: asyncio.Event | None = None
        # One Membership for all subscribers whose own is equal to it (on a public or private
        # channel, every subscriber): ~130 B less per subscription than one each, with its
        # copy of the channel name.
        self.membership: Membership | None = None


# A flush that wrote to at least BUSY_FLUSH subscribers holds the next one until WRITE_COST per
# write it made (at most MAX_FLUSH_DELAY seconds) has passed since it ended, so the events that
# come meanwhile share one write per subscriber; an event after the hold goes out at once.
# WRITE_COST is measured, not derived: at 2e-6 (about the node's own CPU per write) a stream of
# single events to a big channel (500/s to 1,000 subscribers over two node processes) wrote
# more than this 2-core machine could take and its queue grew for as long as the stream lasted;
# at 2e-5 it stays bounded, for about 3.5 ms more p50 at 500/s to 300 subscribers
# (bench/results/SUMMARY.md). Counted in writes, not timed: on a busy machine a timed flush
# would also measure the preemptions. Monotonic time, not loop.time(): uvloop's is cached per
# loop turn with millisecond resolution.
BUSY_FLUSH = 250
WRITE_COST = 2e-5
MAX_FLUSH_DELAY = 0.01


class Hub:
    def __init__(self, history: History, occupancy: OccupancyWriter) -> None:
        self.history = history
        self.log_reads = SharedReads(history)
        self.occupancy = occupancy
        self.sequencer: Sequencer | None = None  # set by the node (the two refer to each other)
        self.webhooks: Reporter | None = None  # set by the node
        # The bus topics the node listens to (set by the node): one per channel entry here.
        self.topics: Topics | None = None
        self.channels: dict[tuple[str, str], Channel] = {}
        self.connections: dict[str, Subscriber] = {}
        self.users: dict[tuple[str, str], set[Subscriber]] = {}
        self.app_counts: Counter[str] = Counter()
        # Frames written per app (the excluded publisher counted too): one addition per event,
        # read by the dashboard's chart sampler.
        self.delivered: Counter[str] = Counter()
        self._dirty: list[Subscriber] = []
        self._flush_scheduled = False
        self._hold_until = 0.0  # loop time before which a flush waits (after a big one)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- connections

    def add_connection(self, conn: Subscriber) -> None:
        self.connections[conn.socket_id] = conn
        self.app_counts[conn.app_id] += 1

    def remove_connection(self, conn: Subscriber, channels: list[str], user_id: str | None) -> None:
        if self.connections.pop(conn.socket_id, None) is None:
            return
        self.app_counts[conn.app_id] -= 1
        for name in channels:
            self.unsubscribe(conn, name)
        if user_id is not None:
            self.sign_out(conn, user_id)

    def sign_in(self, conn: Subscriber, user_id: str) -> None:
        self.users.setdefault((conn.app_id, user_id), set()).add(conn)

    def sign_out(self, conn: Subscriber, user_id: str) -> None:
        key = (conn.app_id, user_id)
        conns = self.users.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[key]

    def signed_in(self, app_id: str, user_id: str) -> list[Subscriber]:
        return list(self.users.get((app_id, user_id), ()))

    def local_count(self, app_id: str, channel: str) -> int:
        ch = self.channels.get((app_id, channel))
        return len(ch.subscribers) if ch is not None else 0

    # ----------------------------------------------------------------- subscriptions

    async def subscribe(self, conn: Subscriber, name: str, on_added: Answer,
                        resume: ResumeRequest | None = None) -> bool:
        """Add ``conn`` to the channel; False if the connection closed meanwhile.

        ``on_added(position, failure)`` runs right after, before any event can reach it (it
        sends subscription_succeeded): ``position`` is the serial the subscription starts
        after, for subscriptions that asked for positions (``resume``, docs/resume.md), else
        None; ``failure`` says why a resume could not be honoured. A resuming subscriber is
        first sent the events it missed (gateway/ws/resume.py).

        The first local subscriber has the node listen to the channel's bus topic, then reads
        the channel's current serial as the baseline before it is answered, so it gets exactly
        the events accepted after that point (gateway/ws/topics.py).
        """
        key = (conn.app_id, name)
        ch = self.channels.get(key)
        first = ch is None
        topic = None
        if ch is None:
            ch = self.channels[key] = Channel(conn.app_id, name)
            ch.held = []
            ch.baseline = asyncio.Event()
            if self.topics is not None:
                topic = self.topics.want(conn.app_id, name)
        ch.joining += 1
        try:
            if first:
                if topic is not None and self.topics is not None:
                    await self.topics.live(topic)
                await self._read_baseline(ch)
            elif resume is not None and ch.baseline is not None:
                await ch.baseline.wait()
            if resume is not None and resume.serial is not None and ch.last is not None:
                joined = await replay(self, conn, ch, resume, on_added)
            else:
                position = ch.last if resume is not None else None
                joined = self.join(conn, ch, resume is not None, on_added, position)
        except BaseException:
            if first:
                ch.last = None
            raise
        finally:
            self._settle(ch, first)
        if joined:
            self._counted(conn.app_id, name, +1)
        return joined

    def join(self, conn: Subscriber, ch: Channel, tracked: bool,
             on_added: Answer | None = None, position: int | None = None,
             failure: str | None = None) -> bool:
        """Make ``conn`` a subscriber of ``ch`` and answer it, in one step: no event can come
        between (False if it closed meanwhile)."""
        if conn.closed:
            return False
        ch.subscribers[conn.socket_id] = conn
        if tracked:
            if ch.tracked is None:
                ch.tracked = set()
            ch.tracked.add(conn.socket_id)
        if on_added is not None:
            on_added(position, failure)
        return True

    async def _read_baseline(self, ch: Channel) -> None:
        """The channel's position, for its first local subscriber; then the subscribers that
        wait for it go on (even if the read failed: they find ``last`` unknown)."""
        try:
            ch.last = await retrying(lambda: self.history.current_serial(ch.app_id, ch.name))
        finally:
            if ch.baseline is not None:
                ch.baseline.set()
                ch.baseline = None

    def _settle(self, ch: Channel, first: bool) -> None:
        ch.joining -= 1
        if first and self.sequencer is not None:
            self.sequencer.release(ch)
        if (not ch.subscribers and not ch.joining
                and self.channels.get((ch.app_id, ch.name)) is ch):
            self._forget(ch.app_id, ch.name)

    def unsubscribe(self, conn: Subscriber, name: str) -> None:
        key = (conn.app_id, name)
        ch = self.channels.get(key)
        if ch is None or ch.subscribers.pop(conn.socket_id, None) is None:
            return
        if ch.tracked is not None:
            ch.tracked.discard(conn.socket_id)
            if not ch.tracked:
                ch.tracked = None
        if not ch.subscribers and not ch.joining:
            self._forget(conn.app_id, name)
        self._counted(conn.app_id, name, -1)

    def _forget(self, app_id: str, name: str) -> None:
        """The channel has no local subscriber left: drop its entry and its bus topic."""
        del self.channels[(app_id, name)]
        if self.topics is not None:
            self.topics.drop(app_id, name)

    def _counted(self, app_id: str, name: str, delta: int) -> None:
        """A local subscription came or went: occupancy and the occupied/vacated webhooks."""
        if name.startswith(USER_CHANNEL_PREFIX):  # not a channel to count or list
            return
        self.occupancy.mark(app_id, name)
        if self.webhooks is not None:
            self.webhooks.channel_subscription_changed(app_id, name, delta)

    def shared_membership(self, app_id: str, membership: Membership) -> Membership:
        """The channel's shared Membership when equal to ``membership`` (which becomes the
        shared one if there is none yet), else ``membership``. Presence and user channel
        memberships (a user each) are kept as they are."""
        ch = self.channels.get((app_id, membership.channel))
        if ch is None or membership.user_id is not None:
            return membership
        if ch.membership is None:
            ch.membership = membership
        return ch.membership if ch.membership == membership else membership

    # ----------------------------------------------------------------- fan-out

    def deliver(self, ch: Channel, event: str, data: Any, user_id: str | None = None,
                exclude: str | None = None, serial: int | None = None) -> None:
        if not ch.subscribers:
            return
        self.delivered[ch.app_id] += len(ch.subscribers)
        data_frame = framing.text(frames.channel_event(event, ch.name, data, user_id))
        tracked = ch.tracked
        if tracked is not None and serial is not None:
            self._deliver_tracked(ch, data_frame, event, data, exclude, serial, tracked)
            return
        for socket_id, conn in ch.subscribers.items():
            if socket_id != exclude:
                conn.enqueue(data_frame)

    def _deliver_tracked(self, ch: Channel, data_frame: bytes, event: str, data: Any,
                         exclude: str | None, serial: int, tracked: set[str]) -> None:
        """The channel has subscribers that asked for positions: they get the frame with the
        event's serial, the others the plain one (both built once)."""
        serial_frame = framing.text(frames.channel_event(event, ch.name, data, serial=serial))
        for socket_id, conn in ch.subscribers.items():
            if socket_id != exclude:
                conn.enqueue(serial_frame if socket_id in tracked else data_frame)

    def signal_gap(self, ch: Channel, last: int, ev: BusEvent) -> None:
        """The node found events lost on ``ch`` between ``last`` and ``ev`` (the sequencer's
        ``on_gap``): subscribers that follow positions are told, as after a failed resume."""
        if not ch.tracked or ev.serial is None:
            return
        reason = failure(last, ev.serial, [ev]) or EXPIRED
        frame = framing.text(frames.resume_failed(ch.name, reason, last))
        for socket_id in ch.tracked:
            conn = ch.subscribers.get(socket_id)
            if conn is not None:
                conn.enqueue(frame)

    def deliver_event(self, ch: Channel, ev: BusEvent) -> None:
        self.deliver(ch, ev.event, ev.data, ev.user_id, ev.exclude, ev.serial)

    def schedule_flush(self, conn: Subscriber) -> None:
        """Called by a connection whose pending list just became non-empty.

        The flush runs on the next loop turn, or, when the last one was big (a fan-out: one
        write call per subscriber), a little later (see BUSY_FLUSH): the events that arrive
        meanwhile go out in the same write. Single events at 500/s to 1,000 subscribers
        otherwise cost one write call per delivery. An event that comes after the hold has
        passed (50/s to 1,000 subscribers) is not delayed."""
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            wait = self._hold_until - time.monotonic()
            if wait > 0:
                self._loop.call_later(wait, self._flush)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()
        if len(dirty) >= BUSY_FLUSH:
            hold = min(len(dirty) * WRITE_COST, MAX_FLUSH_DELAY)
            self._hold_until = time.monotonic() + hold
