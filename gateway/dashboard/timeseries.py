"""Per-app samples for the dashboard's charts: one small Redis hash per app and minute.

``P dts:{app}:{minute}`` (minute = unix time // 60), expiring after ``dashboard.chart_minutes``:

- ``c:{node}``: the app's connections on that node, set by the node every SAMPLE_SECONDS (the
  chart shows the sum over nodes of each minute's last samples);
- ``e``: events accepted in that minute, added by each API process every SAMPLE_SECONDS from
  the counter it already keeps for ``/metrics``;
- ``d``: messages delivered to connections in that minute, added by each node every
  SAMPLE_SECONDS from its hub's per-app counter (one addition per event, not per delivery).

Sampling reads counters the publish and fan-out paths keep anyway: it adds nothing to them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

log = logging.getLogger("clarion.dashboard.timeseries")

SAMPLE_SECONDS = 5.0


def bucket_key(prefix: str, app_id: str, minute: int) -> str:
    return f"{prefix}dts:{app_id}:{minute}"


def _ttl(minutes: int) -> int:
    return minutes * 60 + 120


def series(client: redis.Redis, prefix: str, app_id: str, minutes: int,
           now: float | None = None) -> list[dict[str, int]]:
    """The last ``minutes`` minutes, oldest first: ``{"minute", "connections", "events",
    "delivered"}``."""
    current = int((time.time() if now is None else now) // 60)
    span = range(current - minutes + 1, current + 1)
    pipe = client.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(bucket_key(prefix, app_id, minute))
    out = []
    for minute, raw in zip(span, pipe.execute(), strict=True):
        conns = sum(int(v) for k, v in raw.items() if k.startswith(b"c:"))
        out.append({"minute": minute * 60, "connections": conns,
                    "events": int(raw.get(b"e", 0)), "delivered": int(raw.get(b"d", 0))})
    return out


class NodeSampler:
    """The node's connections and deliveries per app, written every SAMPLE_SECONDS (asyncio
    client)."""

    def __init__(self, client: Any, prefix: str, node_id: str, minutes: int,
                 counts: Mapping[str, int], delivered: Mapping[str, int]) -> None:
        self.client = client
        self.prefix = prefix
        self.field = f"c:{node_id}"
        self.ttl = _ttl(minutes)
        self.counts = counts
        self.delivered = delivered
        self._last: dict[str, int] = dict(delivered)
        self._stopped = asyncio.Event()

    async def sample(self) -> None:
        minute = int(time.time() // 60)
        delivered = dict(self.delivered)
        pipe = self.client.pipeline(transaction=False)
        for app_id in set(self.counts) | set(delivered):
            key = bucket_key(self.prefix, app_id, minute)
            pipe.hset(key, self.field, max(self.counts.get(app_id, 0), 0))
            delta = delivered.get(app_id, 0) - self._last.get(app_id, 0)
            if delta > 0:
                pipe.hincrby(key, "d", delta)
            pipe.expire(key, self.ttl)
        await pipe.execute()
        self._last = delivered

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("chart sample not written: %s", exc)
            try:
                await asyncio.wait_for(self._stopped.wait(), SAMPLE_SECONDS)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopped.set()


class ApiSampler:
    """Adds the events each API process accepted to the minute's bucket: a daemon thread,
    started by the app factory (each server process builds its own app after the fork, so
    each runs one)."""

    def __init__(self, client: redis.Redis, prefix: str, minutes: int,
                 accepted: Callable[[], dict[str, float]]) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = _ttl(minutes)
        self.accepted = accepted
        self._last: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._last = self.accepted()
                self._thread = threading.Thread(target=self._run, name="dashboard-sampler",
                                                daemon=True)
                self._thread.start()

    def sample(self) -> None:
        totals = self.accepted()
        minute = int(time.time() // 60)
        pipe = self.client.pipeline(transaction=False)
        for app_id, total in totals.items():
            delta = int(total - self._last.get(app_id, 0))
            if delta > 0:
                key = bucket_key(self.prefix, app_id, minute)
                pipe.hincrby(key, "e", delta)
                pipe.expire(key, self.ttl)
        pipe.execute()
        self._last = totals

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_SECONDS)
            try:
                self.sample()
            except redis.RedisError as exc:
                log.debug("chart sample not written: %s", exc)
