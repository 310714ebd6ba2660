"""The node's side of the Redis bus: one listener, per-channel ordering, gap filling, publishing.

Ordering (contracts.md, "The path of an event", step 3): events from the API carry a
per-channel serial. Per local channel the hub keeps the last serial delivered. An event with
``serial <= last`` is a duplicate (a Celery task delivered twice) and is dropped; ``last + 1``
is delivered at once; anything higher means events are missing (another worker has not
published them yet, or they were published while the bus was down): the channel then parks
further events and a catch-up task reads the missing ones from history, delivers everything in
serial order and releases the channel. Only that channel waits; the listener goes on with the
others. Server-made events (member_added/removed, client events) have no serial and keep their
place among the parked ones.

History is bounded (settings.history.size): in a burst, a slow worker's events can be trimmed
from it before they are published. Then the catch-up waits up to GAP_WAIT for them to arrive
on the bus, and only after that delivers without them; if they come later still, they are
delivered late (out of order) rather than dropped as duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from gateway.state import bus as bus_codec
from gateway.state.bus import BusEvent, BusMessage, EventBatch, Terminate
from gateway.state.history import History
from gateway.state.keys import Keys
from gateway.ws.background import WakeLoop
from gateway.ws.hub import Channel, Hub

log = structlog.get_logger("clarion.ws.bus")

MAX_BACKOFF = 5.0
# Bus messages handled per loop turn at most (a bound on how long the loop is held).
MAX_DRAIN = 1000
# How long a channel may wait for missing serials that history no longer holds.
GAP_WAIT = 2.0
GAP_POLL = 0.01
MAX_SKIPPED = 10_000
MAX_RANGES = 64


class Sequencer:
    def __init__(self, hub: Hub, history: History) -> None:
        self.hub = hub
        self.history = history
        self.tasks: set[asyncio.Task[None]] = set()
        # Counters for tests and later metrics.
        self.duplicates = 0  # dropped: already delivered
        self.late = 0  # delivered after the channel had moved past them
        self.unfilled = 0  # given up on (neither history nor the bus had them in time)

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
        if last is None or serial == last + 1:
            ch.last = serial
            self.hub.deliver_event(ch, ev)
        elif serial <= last:
            self._late_or_duplicate(ch, ev)
        else:
            ch.held = [ev]
            self._spawn(ch)

    def _late_or_duplicate(self, ch: Channel, ev: BusEvent) -> None:
        if ch.skipped is not None and ch.skipped.take(ev.serial or 0):
            self.late += 1
            self.hub.deliver_event(ch, ev)
        else:
            self.duplicates += 1

    def release(self, ch: Channel) -> None:
        """The channel's baseline is known: deliver what was parked meanwhile."""
        if ch.held:
            self._spawn(ch)
        else:
            ch.held = None

    def reconcile(self, ch: Channel, current: int) -> None:
        """The channel's counter is at ``current`` (read after a bus reconnect): fill up to it."""
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
        loop = asyncio.get_running_loop()
        parked: list[BusEvent] = []  # arrival order, serial-less ones included
        known: dict[int, BusEvent] = {}
        trimmed: list[tuple[int, int]] = []
        fetched = 0  # history already read up to this serial
        give_up = loop.time() + GAP_WAIT
        try:
            while True:
                new, ch.held = ch.held or [], []
                parked += new
                for e in new:
                    if e.serial is not None:
                        known.setdefault(e.serial, e)
                top = max([target, *known])
                last = ch.last
                if last is not None and top > last and not _contiguous(last, top, known):
                    if top > fetched:
                        trimmed = await self._fill_from_history(ch, last, top, known)
                        fetched = top
                    if trimmed and _incomplete(trimmed, known) and loop.time() < give_up:
                        # Trimmed from history: they can only come on the bus now.
                        await asyncio.sleep(GAP_POLL)
                        continue
                    if trimmed:
                        self._give_up(ch, trimmed, known)
                self._deliver_in_order(ch, parked, known)
                parked, known, trimmed, target = [], {}, [], 0
                if not ch.held:
                    return
                give_up = loop.time() + GAP_WAIT
        except Exception:
            log.exception("catch_up_failed", app=ch.app_id, channel=ch.name)
        finally:
            ch.held = None

    async def _fill_from_history(
        self, ch: Channel, after: int, upto: int, known: dict[int, BusEvent]
    ) -> list[tuple[int, int]]:
        """Add the events in (after, upto] that history holds to ``known``; return the ranges
        ``[lo, hi)`` of serials that may have existed but were trimmed from it (usually none).

        A serial history lacks did not necessarily exist: a channel's counter starts at the
        Redis time in microseconds, so serials jump when it is created or re-created. Only a
        full history can have lost events, and only below its oldest entry. A range too wide
        to be real (such a jump) cannot be checked serial by serial; it is waited out.
        """
        h = self.history
        try:
            found = await h.since(ch.app_id, ch.name, after, upto + 1)
            for serial, e in found:
                known.setdefault(
                    serial, BusEvent(ch.app_id, ch.name, e["e"], e.get("d"), serial, e.get("x"))
                )
            if _contiguous(after, upto, known):
                return []
            key = h.keys.history(ch.app_id, ch.name)
            if await h.redis.zcard(key) < h.size:
                return []
            oldest = await h.redis.zrange(key, 0, 0, withscores=True)
        except Exception as exc:
            # Redis down: deliver what we have rather than hold the channel.
            log.warning("gap_fill_failed", app=ch.app_id, channel=ch.name, error=str(exc))
            return []
        below = min(int(oldest[0][1]), upto + 1) if oldest else after + 1
        if below - after > MAX_SKIPPED:
            return [(after + 1, below)]
        return _runs([s for s in range(after + 1, below) if s not in known])

    def _give_up(self, ch: Channel, trimmed: list[tuple[int, int]],
                 known: dict[int, BusEvent]) -> None:
        """Deliver without them; remember where they were so they can still come late."""
        ranges = [(lo, hi) for lo, hi in trimmed
                  if hi - lo > MAX_SKIPPED or any(s not in known for s in range(lo, hi))]
        log.warning("gap_unfilled", app=ch.app_id, channel=ch.name, ranges=ranges[:5])
        self.unfilled += sum(min(hi - lo, MAX_SKIPPED) for lo, hi in ranges)
        skipped = ch.skipped or Skipped()
        skipped.ranges = (skipped.ranges + ranges)[-MAX_RANGES:]
        ch.skipped = skipped

    def _deliver_in_order(
        self, ch: Channel, parked: list[BusEvent], known: dict[int, BusEvent]
    ) -> None:
        """Serial events in serial order (each preceded by the missing ones before it),
        serial-less ones where they arrived among them."""
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
        if ch.last is not None and ev.serial <= ch.last:
            self._late_or_duplicate(ch, ev)
            return
        ch.last = ev.serial
        self.hub.deliver_event(ch, ev)


class Skipped:
    """Serial ranges a channel moved past without their events, and the late ones seen."""

    __slots__ = ("ranges", "seen")

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.seen: set[int] = set()

    def take(self, serial: int) -> bool:
        """Whether ``serial`` is a late event to deliver (once) rather than a duplicate."""
        if serial in self.seen or not any(lo <= serial < hi for lo, hi in self.ranges):
            return False
        if len(self.seen) >= MAX_SKIPPED:
            self.seen.clear()
            self.ranges.clear()  # forget rather than grow: late events are dropped from here
            return False
        self.seen.add(serial)
        return True


def _runs(serials: list[int]) -> list[tuple[int, int]]:
    """Sorted serials as ``[lo, hi)`` ranges of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for s in serials:
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], s + 1)
        else:
            runs.append((s, s + 1))
    return runs


def _incomplete(ranges: list[tuple[int, int]], known: dict[int, Any]) -> bool:
    """Whether some serial of ``ranges`` is still missing (always, for an uncheckable range)."""
    return any(hi - lo > MAX_SKIPPED or any(s not in known for s in range(lo, hi))
               for lo, hi in ranges)


def _contiguous(last: int, top: int, events: dict[int, Any]) -> bool:
    """Whether every serial in (last, top] is among ``events``."""
    return sum(1 for s in events if last < s <= top) == top - last


class BusListener:
    """Subscribes to ``P bus`` and feeds the sequencer, reconnecting with back-off.

    Uses its own client without retries, so that a lost connection surfaces here (and the
    node reconciles its channels) instead of being silently re-established by redis-py.
    """

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        sequencer: Sequencer,
        on_terminate: Callable[[Terminate], None],
        on_connected: Callable[[], None],
        on_control: Callable[[BusMessage], None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.sequencer = sequencer
        self.on_terminate = on_terminate
        self.on_connected = on_connected
        # Every other kind (apps changed, watchlist online/offline).
        self.on_control = on_control
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.bus)
                self.connected.set()
                backoff = 0.1
                log.info("bus_subscribed", channel=self.keys.bus)
                self.on_connected()
                async for msg in pubsub.listen():
                    if msg["type"] == "message":
                        self.handle(msg["data"])
                    pass  # await self._drain(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus_disconnected", error=str(exc), retry_in=backoff)
            finally:
                self.connected.clear()
                await _close_quietly(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _drain(self, pubsub: Any) -> None:
        """Handle the messages already received before the loop turns. Each message waited
        for separately gets its own flush, one write per subscriber each: at 500 events/s to
        1,000 subscribers that is half a million write calls a second, more than a core can
        make. Drained together, a subscriber's frames of a whole backlog go out in one write."""
        for _ in range(MAX_DRAIN):
            msg = await pubsub.get_message(timeout=0.0)
            if msg is None:
                return
            if msg["type"] == "message":
                self.handle(msg["data"])

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
    """Publishes node-made events (member_added/removed, client events) in order, pipelined.
    ``stop`` lets ``run`` return after its current batch; ``flush`` sends what is left."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        super().__init__()
        self.redis = redis
        self.keys = keys
        self._queue: list[bytes] = []

    def publish(self, msg: BusMessage) -> None:
        self._queue.append(msg.encode())
        self._wake.set()

    async def round(self) -> None:
        await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for raw in batch:
                pipe.publish(self.keys.bus, raw)
            await pipe.execute()
        except Exception as exc:
            # Nothing to roll back: these are live notifications, not accepted API events.
            log.warning("bus_publish_failed", error=str(exc), dropped=len(batch))
