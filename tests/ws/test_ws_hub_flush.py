"""The hub's write coalescing: frames queued in one loop turn go out in one write per
subscriber; after a big flush (a fan-out to BUSY_FLUSH subscribers or more) the next waits a
little, so the events that arrive meanwhile share its writes. A Hub with recording
subscribers, no sockets."""

from __future__ import annotations

import asyncio

from gateway.ws.hub import BUSY_FLUSH, MAX_FLUSH_DELAY, Hub


class Recorder:
    """A subscriber that records its writes."""

    closed = False

    def __init__(self, hub: Hub, socket_id: str) -> None:
        self.hub, self.socket_id, self.app_id = hub, socket_id, "1"
        self.pending: list[bytes] = []
        self.writes: list[list[bytes]] = []

    def enqueue(self, data: bytes) -> None:
        if not self.pending:
            self.hub.schedule_flush(self)
        self.pending.append(data)

    def flush(self) -> None:
        self.writes.append(self.pending)
        self.pending = []


def _hub() -> Hub:
    return Hub(history=None, occupancy=None)  # type: ignore[arg-type]


def test_frames_of_one_turn_share_a_write_and_a_cheap_flush_is_not_delayed() -> None:
    async def run() -> list[list[bytes]]:
        hub = _hub()
        sub = Recorder(hub, "1.1")
        sub.enqueue(b"a")
        sub.enqueue(b"b")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first = list(sub.writes)
        sub.enqueue(b"c")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return first + sub.writes[1:]

    assert asyncio.run(run()) == [[b"a", b"b"], [b"c"]]


def test_after_a_big_flush_the_next_waits_and_coalesces() -> None:
    async def run() -> tuple[list[Recorder], float]:
        hub = _hub()
        subs = [Recorder(hub, f"1.{i}") for i in range(BUSY_FLUSH)]
        for sub in subs:
            sub.enqueue(b"e1")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert all(sub.writes == [[b"e1"]] for sub in subs)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for sub in subs:
            sub.enqueue(b"e2")  # right after the big flush ...
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(subs[0].writes) == 1  # ... held back
        for sub in subs:
            sub.enqueue(b"e3")  # ... so e3 joins it
        while len(subs[0].writes) < 2:
            await asyncio.sleep(0.0002)
        return subs, loop.time() - started

    subs, waited = asyncio.run(run())
    assert all(sub.writes == [[b"e1"], [b"e2", b"e3"]] for sub in subs)
    assert waited <= MAX_FLUSH_DELAY + 0.05


def test_a_small_flush_does_not_delay_the_next() -> None:
    async def run() -> list[list[bytes]]:
        hub = _hub()
        subs = [Recorder(hub, f"1.{i}") for i in range(BUSY_FLUSH - 1)]
        for sub in subs:
            sub.enqueue(b"e1")
        await asyncio.sleep(0.001)
        subs[0].enqueue(b"e2")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return subs[0].writes

    assert asyncio.run(run()) == [[b"e1"], [b"e2"]]


def test_an_event_after_the_hold_has_passed_is_not_delayed() -> None:
    """The hold counts from the end of the big flush, not from the next event's arrival:
    at 50 events/s to 1,000 subscribers every event would otherwise wait it out."""
    async def run() -> list[list[bytes]]:
        hub = _hub()
        subs = [Recorder(hub, f"1.{i}") for i in range(BUSY_FLUSH)]
        for sub in subs:
            sub.enqueue(b"e1")
        await asyncio.sleep(MAX_FLUSH_DELAY + 0.01)  # longer than any hold
        subs[0].enqueue(b"e2")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return subs[0].writes

    assert asyncio.run(run()) == [[b"e1"], [b"e2"]]
