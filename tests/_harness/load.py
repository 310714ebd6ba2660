"""Load for the fault tests: numbered events published at a steady rate through the official
server SDK, and subscribers on several nodes that count what they receive.

``Stream`` runs publisher threads, each owning some channels and numbering each channel's
events 0, 1, 2, ... in the order it publishes them (one thread per channel, so the order the
API accepted a channel's events in is the order its subscribers must see). Each request is a
``trigger_batch`` of one event per owned channel in turn. An event is *accepted* when its
request answered 200 and *attempted* when its request was sent at all (a request that timed
out may still have been accepted).

``Subscribers`` holds WebSocket connections (plain Pusher protocol 7, as pusher-js speaks it)
on a background asyncio loop, every one subscribed to every channel, and records per
connection and channel the numbers received and the publish-to-receipt latency.

``verdict`` compares the two: nothing accepted missing, nothing twice, nothing out of order,
nothing that was never sent.

With ``positions``, subscriptions ask for serials (docs/resume.md) and record where the node
reported events lost (``clarion:resume_failed`` before the first event after the hole): an
accepted event missing from exactly such a hole is *reported lost* (``reported``), which
``verdict(..., allow_reported=True)`` accepts (a Redis that lost data, a failover).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pusher
import websockets

from _harness.cluster import Cluster


class Stream:
    """Publisher threads at ``rate`` events/s in all over ``channels`` channels."""

    def __init__(self, cluster: Cluster, channels: list[str], rate: float, *,
                 threads: int = 4, batch: int = 10) -> None:
        self.cluster = cluster
        self.rate = rate
        self.owned = [channels[t::threads] for t in range(threads)]
        self.batch = batch
        self.accepted: dict[str, list[int]] = defaultdict(list)
        self.attempted: dict[str, list[int]] = defaultdict(list)
        self.refused: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.accepted.values())

    def start(self) -> Stream:
        for owned in self.owned:
            thread = threading.Thread(target=self._run, args=(owned,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), "a publisher is stuck"

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)

    def _run(self, owned: list[str]) -> None:
        sdk = self.cluster.pusher(timeout=5)
        numbers = dict.fromkeys(owned, 0)
        interval = self.batch * len(self.owned) / self.rate
        due = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            due = max(due + interval, time.monotonic() - 1.0)  # never a catch-up burst
            time.sleep(max(0.0, due - time.monotonic()))
            items = []
            for i in range(self.batch):
                channel = owned[(turn + i) % len(owned)]
                items.append((channel, numbers[channel]))
                numbers[channel] += 1
            turn += self.batch
            self._send(sdk, items)

    def _send(self, sdk: pusher.Pusher, items: list[tuple[str, int]]) -> None:
        now = time.time()
        batch = [{"channel": ch, "name": "seq", "data": json.dumps({"n": n, "t": now})}
                 for ch, n in items]
        with self._lock:
            for ch, n in items:
                self.attempted[ch].append(n)
        try:
            sdk.trigger_batch(batch)
        except (pusher.errors.PusherError, OSError) as exc:
            with self._lock:
                self.refused.append(f"{type(exc).__name__}: {str(exc)[:80]}")
            time.sleep(0.05)
            return
        with self._lock:
            self.requests += 1
            for ch, n in items:
                self.accepted[ch].append(n)


@dataclass
class Received:
    """What one subscriber connection got."""

    url: str
    numbers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # (receipt unix time, latency seconds) of every event.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    closed: str | None = None
    # Per channel: how many numbers had been received when each loss report came.
    reports: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


class Subscribers:
    """``per_node`` connections to each of ``urls``, each subscribed to every channel."""

    def __init__(self, urls: list[str], channels: list[str], per_node: int = 2, *,
                 positions: bool = False) -> None:
        self.channels = channels
        self.positions = positions
        self.conns = [Received(url) for url in urls for _ in range(per_node)]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self, timeout: float = 30.0) -> Subscribers:
        self._thread.start()
        assert self._ready.wait(timeout), "subscribers did not get subscribed in time"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        for task in self._tasks:
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        subscribed = [asyncio.Event() for _ in self.conns]
        self._tasks = [asyncio.create_task(self._conn(r, ev))
                       for r, ev in zip(self.conns, subscribed, strict=True)]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in subscribed)), 25)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test thread
            self._error = exc
        self._ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _conn(self, rec: Received, subscribed: asyncio.Event) -> None:
        try:
            async with websockets.connect(rec.url, max_size=2**22, ping_interval=None,
                                          compression=None) as ws:
                await self._subscribe(ws, rec, subscribed)
                async for raw in ws:
                    self._frame(ws, rec, json.loads(raw))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded; the verdict reports it
            rec.closed = f"{type(exc).__name__}: {exc}"

    async def _subscribe(self, ws: Any, rec: Received, subscribed: asyncio.Event) -> None:
        first = json.loads(await ws.recv())
        assert first["event"] == "pusher:connection_established", first
        for ch in self.channels:
            data: dict[str, Any] = {"auth": "", "channel": ch}
            if self.positions:
                data["clarion"] = {"v": 1}
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
        pending = set(self.channels)
        while pending:
            frame = json.loads(await ws.recv())
            if frame.get("event") == "pusher_internal:subscription_succeeded":
                pending.discard(frame["channel"])
        subscribed.set()

    def _frame(self, ws: Any, rec: Received, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if event == "seq":
            data = json.loads(frame["data"])
            now = time.time()
            rec.numbers[frame["channel"]].append(data["n"])
            rec.latencies.append((now, now - data["t"]))
        elif event == "clarion:resume_failed":
            channel = frame["channel"]
            rec.reports[channel].append(len(rec.numbers[channel]))
        elif event == "pusher:ping":
            asyncio.ensure_future(ws.send('{"event":"pusher:pong","data":{}}'))

    def wait_for(self, accepted: dict[str, list[int]], timeout: float) -> None:
        """Until every connection has every accepted event (or ``timeout``), then a little
        longer so that anything extra (a duplicate) would have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(missing(r, accepted) for r in self.conns):
            time.sleep(0.1)
        time.sleep(0.5)

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Latencies of the deliveries received between ``since`` and ``until`` (unix)."""
        return sorted(lat for r in self.conns for at, lat in r.latencies if since <= at < until)


def missing(rec: Received, accepted: dict[str, list[int]]) -> dict[str, list[int]]:
    out = {}
    for ch, ns in accepted.items():
        got = set(rec.numbers.get(ch, ()))
        lost = [n for n in ns if n not in got]
        if lost:
            out[ch] = lost
    return out


def reported(rec: Received, channel: str, n: int) -> bool:
    """Whether the missing event ``n`` lies in a hole the node reported on ``channel``."""
    got = rec.numbers.get(channel, [])
    return any((at == 0 or got[at - 1] < n) and (at == len(got) or got[at] > n)
               for at in rec.reports.get(channel, ()))


def reported_lost(rec: Received, accepted: dict[str, list[int]]) -> dict[str, list[int]]:
    """The accepted events ``rec`` misses that the node reported lost."""
    out = {}
    for ch, lost in missing(rec, accepted).items():
        covered = [n for n in lost if reported(rec, ch, n)]
        if covered:
            out[ch] = covered
    return out


def verdict(subscribers: Subscribers, stream: Stream, *, allow_reported: bool = False
            ) -> list[str]:
    """Every problem found, per connection (empty: none). With ``allow_reported``, an event
    missing where the node reported a loss is not one."""
    problems = []
    for i, rec in enumerate(subscribers.conns):
        where = f"subscriber {i} ({rec.url})"
        if rec.closed:
            problems.append(f"{where}: connection lost: {rec.closed}")
        lost = missing(rec, stream.accepted)
        if allow_reported:
            lost = {ch: [n for n in ns if not reported(rec, ch, n)] for ch, ns in lost.items()}
            lost = {ch: ns for ch, ns in lost.items() if ns}
        if lost:
            total = sum(len(v) for v in lost.values())
            problems.append(f"{where}: {total} accepted events lost, e.g. "
                            f"{sorted(lost.items())[:3]}")
        for ch, ns in rec.numbers.items():
            if len(set(ns)) != len(ns):
                problems.append(f"{where}: {ch}: {len(ns) - len(set(ns))} delivered twice")
            if ns != sorted(ns):
                first = next(i for i in range(1, len(ns)) if ns[i] < ns[i - 1])
                problems.append(f"{where}: {ch}: out of order at {ns[first - 1:first + 2]}")
            unknown = set(ns) - set(stream.attempted.get(ch, ()))
            if unknown:
                problems.append(f"{where}: {ch}: never sent: {sorted(unknown)[:5]}")
    return problems


def finish(stream: Stream, subscribers: Subscribers, timeout: float = 30) -> None:
    """Stop the stream, wait until every subscriber has what was accepted, and fail with what
    went wrong (lost, repeated, out of order)."""
    stream.stop()
    subscribers.wait_for(stream.accepted, timeout)
    subscribers.stop()
    problems = verdict(subscribers, stream)
    assert not problems, "\n".join(problems[:20])


def kill_worker_repeatedly(cluster: Any, times: int, down: float = 1.0,
                           after: float = 2.0) -> list[float]:
    """SIGKILL worker 0 (its main process and pool) ``times`` times, a new one started ``down``
    seconds after each kill and given ``after`` seconds; the wall-clock times of the kills."""
    kills = []
    for _ in range(times):
        cluster.workers[0].kill_group(signal.SIGKILL)
        kills.append(time.time())
        time.sleep(down)
        cluster.replace_worker(0)
        time.sleep(after)
    return kills


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# An API request must be answered within this during a fault (503 allowed, a hang not).
API_DEADLINE = 3.0


@dataclass
class Probe:
    """Raw signed publishes of one app every 20 ms through ``sdk()`` (the official SDK's
    signing): time, status, Retry-After (or the body of an unexpected answer), duration."""

    sdk: Callable[[], pusher.Pusher]
    app_id: str
    answers: list[tuple[float, int | None, str | None, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)

    def _run(self) -> None:
        from _harness.rest import signed_request

        sdk = self.sdk()
        body = json.dumps({"name": "probe", "channels": ["probe"], "data": "{}"}).encode()
        while not self._stop.is_set():
            start = time.time()
            try:
                resp = signed_request(sdk, "POST", f"/apps/{self.app_id}/events", body=body)
                status, retry = resp.status_code, resp.headers.get("Retry-After")
                if status not in (200, 503):
                    retry = resp.text[:200]
            except Exception:  # noqa: BLE001 - recorded: no answer
                status, retry = None, None
            self.answers.append((start, status, retry, time.time() - start))
            time.sleep(0.02)

    def problems(self) -> list[str]:
        """Answers other than 200 or 503 with Retry-After, and answers slower than
        API_DEADLINE."""
        out = []
        for at, status, retry, took in self.answers:
            if status not in (200, 503) or (status == 503 and retry is None):
                out.append(f"app {self.app_id} probe at {at:.2f}: status {status}, {retry}")
            if took > API_DEADLINE:
                out.append(f"app {self.app_id} probe at {at:.2f}: answered after {took:.1f} s")
        return out

    def first_ok_after(self, t: float) -> float:
        return min((at for at, status, _, _ in self.answers if at >= t and status == 200),
                   default=float("inf"))

    def unavailable(self, since: float, until: float) -> float:
        """Seconds from the first refused answer in [since, until) to the next 200."""
        refused = [at for at, status, _, _ in self.answers if since <= at < until and status != 200]
        if not refused:
            return 0.0
        back = min(
            (at for at, status, _, _ in self.answers if at > refused[-1] and status == 200),
            default=until,
        )
        return back - refused[0]

    def refused(self, since: float, until: float) -> int:
        return sum(1 for at, status, _, _ in self.answers if since <= at < until and status != 200)


def live_again(subscribers: Subscribers, t: float, window: float = 0.5) -> float:
    """Seconds from ``t`` to the first ``window`` whose deliveries had a median latency below
    0.1 s: the workers publish live again (the nodes' filling from the logs, meanwhile, is late
    by about a reconcile interval)."""
    start = t
    while start < t + 60:
        lats = subscribers.latencies(since=start, until=start + window)
        if len(lats) >= 20 and percentile(lats, 0.5) < 0.1:
            return start - t
        start += window / 2
    return float("inf")
