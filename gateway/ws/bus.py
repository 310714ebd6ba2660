"""The node's side of the Redis bus: one listener, per-channel ordering, catching up from the
channels' logs, publishing.

Ordering (docs/architecture.md, "The path of an event", step 3): events from the API carry their
channel serial and the serial of the event before them (``prev``, gateway/state/history.py).
Per local channel the hub keeps the last serial delivered. An event with ``serial <= last`` is
a duplicate (a doorbell rung twice) and is dropped; one whose ``prev`` is ``last`` is the next
one and is delivered at once; anything else means the node is behind (another worker has not
published the events between yet, their task was lost with a worker, or they were published
while the bus was down): the channel then parks further events, reads everything it lacks from
the channel's log, delivers it all in serial order and releases the channel. Only that channel
waits; the listener goes on with the others. The node's reconcile tick and a bus reconnect
(gateway/ws/node.py) start the same catch-up for channels that have seen no later event.

The log holds every accepted event for ``history.retention`` seconds (at most
``history.max_events`` per channel), so the catch-up never waits for the bus. When the chain of
serials does not link up even with the log (the events were trimmed from it, or the log was
lost: Redis flushed, replaced or rolled back), the gap is reported (a warning, a count, and
``on_gap``) and delivery goes on from the first event the log still has. Server-made events
(member_added/removed, client events) have no serial and keep their place among the parked
ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from gateway.state import bus as bus_codec
from gateway.state.bus import BusEvent, BusMessage, EventBatch, Terminate
from gateway.state.history import History, LogEntry
from gateway.state.keys import Keys
from gateway.ws.background import WakeLoop
from gateway.ws.hub import Channel, Hub
from gateway.ws.topics import Topics

log = structlog.get_logger("clarion.ws.bus")

# Bus reconnects back off up to this many seconds: the node is deaf meanwhile, so it retries
# often (its catch-up after the reconnect covers the time it was deaf).
MAX_BACKOFF = 1.0
# Events read from a log per round trip.
LOG_PAGE = 1000
# A log read that fails (Redis unreachable) is tried again after this long, doubling.
LOG_RETRY = 0.05
LOG_RETRY_MAX = 1.0

GapHandler = Callable[[Channel, int, BusEvent], None]


def _from_log(ch: Channel, entry: LogEntry) -> BusEvent:
    return BusEvent(ch.app_id, ch.name, entry.event, entry.data, entry.serial, entry.exclude,
                    prev=entry.prev)


class Sequencer:
    def __init__(self, hub: Hub, history: History, on_gap: GapHandler | None = None) -> None:
        self.hub = hub
        self.history = history
        # Called with (channel, last serial delivered, first event delivered after the gap).
        self.on_gap = on_gap
        self.tasks: set[asyncio.Task[None]] = set()
        # Counters for tests and metrics.
        self.duplicates = 0  # dropped: already delivered
        self.filled = 0  # delivered from a log rather than the bus
        self.gaps = 0  # chains that did not link up even with the log (events lost)

    def on_event(self, ev: BusEvent) -> None:
        ch = self.hub.channels.get((ev.app_id, ev.channel))
        if ch is None:
            return
        if ch.held is not None:
            # Parked in arrival order, serial-less ones included, so a member_added that
            # came after an event is not delivered before it.
            ch.held.append(ev)
            return
        serial = ev.serial
        if serial is None:
            self.hub.deliver_event(ch, ev)
            return
        last = ch.last
        if last is None or ev.prev == last:
            ch.last = serial
            self.hub.deliver_event(ch, ev)
        elif serial <= last:
            self.duplicates += 1
        else:
            ch.held = [ev]
            self._spawn(ch)

    def release(self, ch: Channel) -> None:
        """The channel's baseline is known: deliver what was parked meanwhile."""
        if ch.held:
            self._spawn(ch)
        else:
            ch.held = None

    def reconcile(self, ch: Channel, current: int) -> None:
        """The channel's log is at ``current`` (read on the reconcile tick or after a bus
        reconnect): catch up to it."""
        if ch.held is not None:
            return  # a catch-up is already running; it will see later events
        if ch.last is None:
            ch.last = current
        elif current > ch.last:
            ch.held = []
            self._spawn(ch, current)

    def _spawn(self, ch: Channel, target: int = 0) -> None:
        task = asyncio.get_running_loop().create_task(self._catch_up(ch, target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _catch_up(self, ch: Channel, target: int) -> None:
        try:
            while True:
                parked, ch.held = ch.held or [], []
                top = max([target, *(e.serial for e in parked if e.serial is not None)])
                logged: list[LogEntry] = []
                if ch.last is not None and not _links_up(ch.last, parked, top):
                    logged = await self._read_log(ch, ch.last, top)
                self._deliver_in_order(ch, parked, logged)
                target = 0
                if not ch.held:
                    return
        except Exception:
            log.exception("catch_up_failed", app=ch.app_id, channel=ch.name)
        finally:
            ch.held = None

    async def _read_log(self, ch: Channel, after: int, upto: int) -> list[LogEntry]:
        """The channel's logged events in ``(after, upto]``, page by page; a failed read is
        tried again (the bus cannot bring anything meanwhile: it is the same Redis) for as
        long as the channel has subscribers here."""
        out: list[LogEntry] = []
        delay = LOG_RETRY
        while after < upto and self.hub.channels.get((ch.app_id, ch.name)) is ch:
            try:
                page = await self.history.since(ch.app_id, ch.name, after, upto, LOG_PAGE)
            except Exception as exc:
                log.warning("log_read_failed", app=ch.app_id, channel=ch.name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOG_RETRY_MAX)
                continue
            out += page
            if len(page) < LOG_PAGE:
                break
            after = page[-1].serial
        return out

    def _deliver_in_order(
        self, ch: Channel, parked: list[BusEvent], logged: list[LogEntry]
    ) -> None:
        """Serial events in serial order (each preceded by the missing ones before it),
        serial-less ones where they arrived among them."""
        known = {e.serial: e for e in parked if e.serial is not None}
        for entry in logged:
            if entry.serial not in known:
                known[entry.serial] = _from_log(ch, entry)
                self.filled += 1
        order = sorted(known)
        i = 0
        for ev in parked:
            if ev.serial is None:
                self.hub.deliver_event(ch, ev)
                continue
            while i < len(order) and order[i] <= ev.serial:
                self._deliver_serial(ch, known[order[i]])
                i += 1
        for serial in order[i:]:
            self._deliver_serial(ch, known[serial])

    def _deliver_serial(self, ch: Channel, ev: BusEvent) -> None:
        assert ev.serial is not None
        last = ch.last
        if last is not None:
            if ev.serial <= last:
                self.duplicates += 1
                return
            if ev.prev != last:
                self._gap(ch, last, ev)
        ch.last = ev.serial
        self.hub.deliver_event(ch, ev)

    def _gap(self, ch: Channel, last: int, ev: BusEvent) -> None:
        """Events between ``last`` and ``ev`` are in no log any more: say so, then go on."""
        self.gaps += 1
        log.warning("history_gap", app=ch.app_id, channel=ch.name, last=last, prev=ev.prev,
                    serial=ev.serial)
        if self.on_gap is not None:
            self.on_gap(ch, last, ev)


def _links_up(last: int, parked: list[BusEvent], top: int) -> bool:
    """Whether the parked events continue the chain from ``last`` up to ``top`` without a
    hole (then the log has nothing to add)."""
    for ev in sorted((e for e in parked if e.serial is not None and e.serial > last),
                     key=lambda e: e.serial or 0):
        if ev.prev != last:
            return False
        last = ev.serial or 0
    return last >= top


class BusListener:
    """Listens to the node's bus topics (gateway/ws/topics.py: ``P bus`` and one per local
    channel) and feeds the sequencer, reconnecting with back-off.

    Uses its own client without retries, so that a lost connection surfaces here (and the
    node reconciles its channels) instead of being silently re-established by redis-py.
    ``connected`` is set, and ``on_connected`` called, once Redis has confirmed every topic
    the connection subscribed when it was made: events published after that reach the node.
    """

    def __init__(
        self,
        redis: Any,
        topics: Topics,
        sequencer: Sequencer,
        on_terminate: Callable[[Terminate], None],
        on_connected: Callable[[], None],
        on_control: Callable[[BusMessage], None] | None = None,
    ) -> None:
        self.redis = redis
        self.topics = topics
        self.sequencer = sequencer
        self.on_terminate = on_terminate
        self.on_connected = on_connected
        # Every other kind (apps changed, watchlist online/offline).
        self.on_control = on_control
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await self.topics.attach(pubsub)
                conn = pubsub.connection
                while True:
                    # Read from the connection, not through ``pubsub.listen()``: 2.7 us per
                    # message instead of 6 (redis-py 8, measured), and with a topic per
                    # channel a request to ten channels is ten messages. Only the
                    # (un)subscribe answers go through redis-py's bookkeeping. The messages
                    # already received are all handled in this loop turn (a read does not
                    # wait while the connection has buffered data), so a subscriber's frames
                    # of a backlog go out in one write, not one each.
                    reply = await conn.read_response(disconnect_on_error=False,
                                                     push_request=True)
                    # A list, or under RESP3 a push notification (a list's subclass).
                    if isinstance(reply, list) and reply[0] == b"message":
                        self.handle(reply[2])
                        continue
                    msg = await pubsub.handle_message(reply)
                    if (msg is not None and msg["type"] == "subscribe"
                            and self.topics.confirmed(msg["channel"])):
                        self.connected.set()
                        backoff = 0.1
                        log.info("bus_subscribed", topics=len(self.topics.wanted) + 1)
                        self.on_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus_disconnected", error=str(exc), retry_in=backoff)
            finally:
                self.connected.clear()
                self.topics.detach()
                await _close_quietly(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def handle(self, raw: bytes) -> None:
        try:
            msg: BusMessage | None = bus_codec.decode(raw)
        except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError):
            log.warning("bus_message_malformed", raw=raw[:200])
            return
        if isinstance(msg, BusEvent):
            self.sequencer.on_event(msg)
        elif isinstance(msg, EventBatch):
            for event in msg.events:
                self.sequencer.on_event(event)
        elif isinstance(msg, Terminate):
            self.on_terminate(msg)
        elif msg is not None and self.on_control is not None:
            self.on_control(msg)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # the connection is already gone
        pass


class BusPublisher(WakeLoop):
    """Publishes node-made messages in order, pipelined: events (member_added/removed, client
    events, subscription counts) on their channel's topic, the rest on ``P bus``.
    ``stop`` lets ``run`` return after its current batch; ``flush`` sends what is left."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        super().__init__()
        self.redis = redis
        self.keys = keys
        self._queue: list[tuple[str, bytes]] = []

    def publish(self, msg: BusMessage) -> None:
        topic = (self.keys.bus_channel(msg.app_id, msg.channel) if isinstance(msg, BusEvent)
                 else self.keys.bus)
        self._queue.append((topic, msg.encode()))
        self._wake.set()

    async def round(self) -> None:
        await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for topic, raw in batch:
                pipe.publish(topic, raw)
            await pipe.execute()
        except Exception as exc:
            # Nothing to roll back: these are live notifications, not accepted API events.
            log.warning("bus_publish_failed", error=str(exc), dropped=len(batch))
