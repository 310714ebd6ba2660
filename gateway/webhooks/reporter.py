"""What a WebSocket node reports for webhooks: cheap, ordered, never blocking the node.

Every method is a plain (non-async) call that queues the report and returns at once; one
background task per Reporter (started on first use, in the running loop) writes the queue to
Redis in order, pipelined, and keeps it across Redis outages (retrying with a back-off).

Subscription counts are reported as *deltas* by the node but written as this node's
*absolute* count (``P whc:{app}:{channel}`` field = node id), so a write repeated after a
connection error cannot count twice, and a node that comes back after an outage restores its
counts with :meth:`Reporter.resync`. Nothing is queued for an app with no webhook that wants
the event for that channel.

How the node calls it (gateway/ws):

- ``channel_subscription_changed(app_id, channel, +1 / -1)`` right after a connection was
  added to / removed from a channel's local subscribers (every channel type);
- ``member_added(app_id, channel, user_id)`` / ``member_removed(app_id, channel, user_id)``
  when gateway/state/presence.py says the user joined / left cluster-wide (``join`` returned
  a new member, ``leave`` returned the user id), including the removals a node makes while
  sweeping a dead node;
- ``client_event(app_id, channel, event, data, socket_id, user_id)`` for each client event
  accepted and fanned out (``user_id`` on presence channels only);
- ``cache_miss(app_id, channel)`` when a cache channel subscriber got ``pusher:cache_miss``;
- ``node_died(node_id)`` (optional) for each node its registry sweep removed; the webhooks
  workers also notice dead nodes themselves from ``P nodes``;
- ``resync()`` after Redis came back from an outage during which this node may have been
  swept (the node's ``_resync``);
- ``await close()`` on shutdown, after the connections were closed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import structlog

from config.settings import AppSettings, Settings
from gateway.state.keys import Keys
from gateway.state.redis_client import is_cluster, register_script
from gateway.webhooks import events as ev
from gateway.webhooks import scripts

log = structlog.get_logger("clarion.webhooks.reporter")

BATCH = 256
MAX_BACKOFF = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Scripts:
    """The scripts registered on one Redis client (sync or asyncio)."""

    def __init__(self, redis: Any) -> None:
        self.subscriptions = register_script(redis,
            scripts.SUBSCRIPTIONS_APP if is_cluster(redis) else scripts.SUBSCRIPTIONS)
        self.member_added = register_script(redis, scripts.MEMBER_ADDED)
        self.member_removed = register_script(redis, scripts.MEMBER_REMOVED)
        self.append = register_script(redis, scripts.APPEND)


def subscriptions_call(
    keys: Keys, settings: Settings, app: AppSettings, channel: str, node_id: str, count: int,
    now: int,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the SUBSCRIPTIONS script for one node's count of one channel."""
    wh = settings.webhooks
    track = ev.wants_any(app, ev.OCCUPANCY, channel)
    occupied = ev.encode(ev.CHANNEL_OCCUPIED, channel) if ev.wants(
        app, ev.CHANNEL_OCCUPIED, channel) else b""
    want_count = ev.wants(app, ev.SUBSCRIPTION_COUNT, channel)
    counts = keys.wh_counts(app.id, channel)
    # On Redis Cluster the node's keys are in other slots: SUBSCRIPTIONS_APP gets the counts
    # key in their place and never touches them (see NodeChannels).
    node_channels, nodes = (counts, counts) if keys.cluster else (
        keys.wh_node_channels(node_id), keys.wh_nodes)
    return (
        [
            counts, node_channels, keys.wh_reported(app.id, channel), keys.wh_due_of(app.id),
            keys.wh_events_of(app.id), nodes,
        ],
        [
            node_id, count, now, now + int(wh.debounce * 1000),
            due_member("v", app.id, channel), ev.SEP.join((app.id, channel)), app.id, channel,
            occupied, "1" if track else "0",
            due_member("c", app.id, channel) if want_count else "",
            now + int(wh.subscription_count_interval * 1000), scripts.STREAM_MAXLEN,
        ],
    )


class NodeChannels:
    """On Redis Cluster, the record of which channels a node has counts for (``P whn:{node}``,
    ``P wh:nodes``), written apart from the SUBSCRIPTIONS_APP script (another slot): recorded
    *before* any count above zero is written and forgotten only *after* a zero was written,
    each step idempotent. A crash in between leaves a record of a channel whose count is
    zero, which the dead-node sweep writes as zero again (harmless), never a count without
    its record (which no sweep would find: the channel would stay occupied for ever)."""

    def __init__(self, keys: Keys, node_id: str) -> None:
        self.keys = keys
        self.node_id = node_id

    def remember(self, pipe: Any, rows: list[str], now: int) -> None:
        if rows:
            pipe.sadd(self.keys.wh_node_channels(self.node_id), *rows)
            pipe.hsetnx(self.keys.wh_nodes, self.node_id, now)

    def forget(self, pipe: Any, rows: list[str]) -> None:
        if rows:
            pipe.srem(self.keys.wh_node_channels(self.node_id), *rows)


def wake(pipe: Any, keys: Keys, app_ids: Any, at_ms: int) -> None:
    """Redis Cluster: ask the leader to look at these apps' queues by ``at_ms``. Written
    after what it points at; a hint lost to a crash only delays the work until the leader's
    next look at every app (workers/webhooks/leader.py, ALL_APPS_EVERY)."""
    apps = set(app_ids)
    if apps:
        pipe.zadd(keys.wh_wake, dict.fromkeys(apps, at_ms), lt=True)


def due_member(kind: str, app_id: str, channel: str, user_id: str | None = None) -> str:
    parts = [kind, app_id, channel] if user_id is None else [kind, app_id, channel, user_id]
    return ev.SEP.join(parts)


class Reporter:
    """Webhook reports of one WebSocket node (asyncio Redis client)."""

    def __init__(
        self, redis: Any, keys: Keys, settings: Settings, node_id: str,
        *, apps: Any = None, max_queue: int = 100_000,
    ) -> None:
        self.redis = redis
        # The node's AppDirectory (so apps added by `clarion apps` are seen); else settings.
        self.app_by_id = ev.app_lookup(settings, apps)
        self.keys = keys
        self.settings = settings
        self.node_id = node_id
        self.max_queue = max_queue
        self._scripts = Scripts(redis)
        self._node_channels = NodeChannels(keys, node_id) if keys.cluster else None
        # This node's subscriptions per tracked (app, channel), and those not yet written.
        self.counts: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._ops: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    # ----------------------------------------------------------------- node-facing API

    def channel_subscription_changed(self, app_id: str, channel: str, delta: int) -> None:
        app = self.app_by_id(app_id)
        if not (ev.wants_any(app, ev.OCCUPANCY, channel)
                or ev.wants(app, ev.SUBSCRIPTION_COUNT, channel)):
            return
        key = (app_id, channel)
        self.counts[key] = max(0, self.counts.get(key, 0) + delta)
        self._dirty.add(key)
        self._kick()

    def member_added(self, app_id: str, channel: str, user_id: str) -> None:
        app = self.app_by_id(app_id)
        if ev.wants_any(app, ev.MEMBERSHIP, channel):
            self._push(("added", app_id, channel, user_id))

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        app = self.app_by_id(app_id)
        if ev.wants_any(app, ev.MEMBERSHIP, channel):
            self._push(("removed", app_id, channel, user_id))

    def client_event(
        self, app_id: str, channel: str, event: str, data: Any, socket_id: str,
        user_id: str | None = None,
    ) -> None:
        if ev.wants(self.app_by_id(app_id), ev.CLIENT_EVENT, channel):
            body = ev.client_event(channel, event, data, socket_id, user_id)
            self._push(("append", app_id, ev.CLIENT_EVENT, channel, body))

    def cache_miss(self, app_id: str, channel: str) -> None:
        if ev.wants(self.app_by_id(app_id), ev.CACHE_MISS, channel):
            body = ev.encode(ev.CACHE_MISS, channel)
            self._push(("append", app_id, ev.CACHE_MISS, channel, body))

    def node_died(self, node_id: str) -> None:
        if node_id != self.node_id:
            self._push(("node_died", node_id))

    def resync(self) -> None:
        """Write every local count again (after an outage in which we may have been swept)."""
        self._dirty.update(self.counts)
        self._kick()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything reported so far is written."""
        if self._task is None and not self._dirty and not self._ops:
            return
        self._kick()
        assert self._idle is not None
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop."""
        try:
            await self.flush(timeout)
        except TimeoutError:
            log.warning("webhook_reports_unwritten", ops=len(self._ops), counts=len(self._dirty))
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    # ----------------------------------------------------------------- internals

    def _push(self, op: tuple[Any, ...]) -> None:
        if len(self._ops) >= self.max_queue:
            self._ops.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("webhook_reports_dropped", dropped=self.dropped)
        self._ops.append(op)
        self._kick()

    def _kick(self) -> None:
        if self._closing:
            return
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._idle = asyncio.Event()
            self._task = loop.create_task(self._run())
        assert self._wake is not None and self._idle is not None
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        backoff = 0.1
        while True:
            if not self._dirty and not self._ops:
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            dirty = list(self._dirty)[:BATCH]
            ops = [self._ops[i] for i in range(min(BATCH, len(self._ops)))]
            try:
                written = await self._write(dirty, ops)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_report_failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                # We may have been swept meanwhile: write every count again.
                self._dirty.update(self.counts)
                continue
            backoff = 0.1
            for key in dirty:
                current = self.counts.get(key, 0)
                # A change that arrived during the write keeps the key dirty.
                if written.get(key, current) == current:
                    self._dirty.discard(key)
                    if current == 0:
                        self.counts.pop(key, None)
            for _ in ops:
                self._ops.popleft()

    async def _write(
        self, dirty: list[tuple[str, str]], ops: list[tuple[Any, ...]]
    ) -> dict[tuple[str, str], int]:
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        written: dict[tuple[str, str], int] = {}
        known = []
        for app_id, channel in dirty:
            app = self.app_by_id(app_id)
            if app is None:
                continue
            written[(app_id, channel)] = self.counts.get((app_id, channel), 0)
            known.append((app, channel, written[(app_id, channel)]))
        await self._remember(written, now)
        for app, channel, count in known:
            k, a = subscriptions_call(self.keys, self.settings, app, channel, self.node_id,
                                      count, now)
            await self._queue(self._scripts.subscriptions, k, a, pipe)
        node_sweeps = []
        for op in ops:
            kind = op[0]
            if kind == "node_died":
                node_sweeps.append(op[1])
                continue
            app = self.app_by_id(op[1])
            if app is None:
                continue
            if kind == "added":
                _, app_id, channel, user = op
                added = ev.encode(ev.MEMBER_ADDED, channel, user_id=user) if ev.wants(
                    app, ev.MEMBER_ADDED, channel) else b""
                await self._queue(
                    self._scripts.member_added,
                    [self.keys.wh_members(app_id, channel), self.keys.wh_due_of(app_id),
                     self.keys.wh_events_of(app_id)],
                    [user, due_member("m", app_id, channel, user), added, app_id, channel,
                     scripts.STREAM_MAXLEN],
                    pipe,
                )
            elif kind == "removed":
                _, app_id, channel, user = op
                await self._queue(
                    self._scripts.member_removed,
                    [self.keys.wh_members(app_id, channel), self.keys.wh_due_of(app_id)],
                    [user, due_member("m", app_id, channel, user),
                     now + int(self.settings.webhooks.debounce * 1000)],
                    pipe,
                )
            elif kind == "append":
                _, app_id, name, channel, body = op
                await self._queue(
                    self._scripts.append, [self.keys.wh_events_of(app_id)],
                    [app_id, name, channel, body, scripts.STREAM_MAXLEN], pipe,
                )
        if len(pipe):
            await pipe.execute()
        touched = {app_id for app_id, _ in written}
        touched.update(op[1] for op in ops if op[0] != "node_died")
        await self._forget(written, touched, now)
        for node in node_sweeps:
            await sweep_node_async(self.redis, self.keys, self.settings, node, self._scripts,
                                   self.app_by_id)
        return written

    async def _queue(self, script: Any, keys: list[str], args: list[Any], pipe: Any) -> None:
        if self._node_channels is None:
            await script(keys=keys, args=args, client=pipe)
        else:
            # A cluster pipeline sends EVALSHA without loading the script on the key's node
            # first (NOSCRIPT on a node that has not seen it): EVAL there.
            pipe.eval(script.script, len(keys), *keys, *args)

    async def _remember(self, written: dict[tuple[str, str], int], now: int) -> None:
        if self._node_channels is not None:
            pipe = self.redis.pipeline(transaction=False)
            self._node_channels.remember(
                pipe, [ev.SEP.join(key) for key, count in written.items() if count > 0], now)
            if len(pipe):
                await pipe.execute()

    async def _forget(
        self, written: dict[tuple[str, str], int], touched: set[str], now: int
    ) -> None:
        if self._node_channels is not None:
            pipe = self.redis.pipeline(transaction=False)
            self._node_channels.forget(
                pipe, [ev.SEP.join(key) for key, count in written.items() if count == 0])
            wake(pipe, self.keys, touched, now)
            if len(pipe):
                await pipe.execute()


async def sweep_node_async(
    redis: Any, keys: Keys, settings: Settings, node_id: str, compiled: Scripts,
    app_by_id: ev.AppLookup | None = None,
) -> int:
    """Drop every count of a dead node (idempotent); vacates follow after the debounce."""
    rows = await redis.smembers(keys.wh_node_channels(node_id))
    now = now_ms()
    for row in rows:
        app_id, channel = (row.decode() if isinstance(row, bytes) else row).split(ev.SEP, 1)
        app = (app_by_id or settings.app_by_id)(app_id)
        if app is None:
            continue
        k, a = subscriptions_call(keys, settings, app, channel, node_id, 0, now)
        await compiled.subscriptions(keys=k, args=a)
        if keys.cluster:
            await redis.zadd(keys.wh_wake, {app_id: now}, lt=True)
    await redis.delete(keys.wh_node_channels(node_id))
    await redis.hdel(keys.wh_nodes, node_id)
    return len(rows)
