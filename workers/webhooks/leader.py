"""The webhooks leader: one thread per webhooks worker process, one of them active.

The active one holds ``P wh:leader`` (renewed every tick, a few seconds of TTL) and:

- pumps ``P wh:events`` (consumer group ``wh``): collects events for up to
  ``batch_window`` seconds or ``batch_size`` events, splits them per endpoint (event type
  and channel prefix filters) into bodies of at most ``batch_size`` events, and commits: the
  delivery records are written and the stream entries acknowledged and deleted in one script
  (refused if another leader took the entries over meanwhile, so an event is never batched
  twice). Each new delivery is then enqueued as ``clarion.webhooks.deliver``; it is also in
  ``P wh:retry`` with a lease, so an enqueue lost to a crash is made again later;
- on taking the lead, takes over every entry still pending for another consumer (a leader
  that died between reading and committing);
- every tick, enqueues due deliveries from ``P wh:retry`` (leasing each) and runs the
  debounced transitions due in ``P wh:due`` (each checked by its script);
- sweeps the webhook counts of WebSocket nodes that stopped heartbeating (``P nodes``);
- prunes the status indexes of records past their retention.

Long delays never become Celery countdowns: the Redis broker would run them twice once they
outlive its visibility timeout.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis

from config.settings import Settings
from gateway.state.keys import Keys
from gateway.webhooks import events as ev
from gateway.webhooks import scripts
from gateway.webhooks.reporter import due_member, subscriptions_call
from gateway.webhooks.store import (
    DEAD,
    DELIVERED,
    PENDING,
    Delivery,
    Store,
    new_delivery_id,
    now_ms,
)

log = logging.getLogger("clarion.webhooks.leader")

GROUP = "wh"
LEADER_TTL_MS = 5000
TAKE_LIMIT = 500


class Leader:
    def __init__(
        self, settings: Settings, client: redis.Redis, keys: Keys,
        enqueue: Callable[[str], None], consumer: str | None = None, apps: Any = None,
    ) -> None:
        self.settings = settings
        self.apps = apps
        self.app_by_id = ev.app_lookup(settings, apps)
        self.redis = client
        self.keys = keys
        self.enqueue = enqueue
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.token = self.consumer
        self.store = Store(client, keys, settings, apps)
        self.leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        s = client.register_script
        self._lead = s(scripts.LEAD)
        self._release = s(scripts.RELEASE)
        self._commit = s(scripts.COMMIT)
        self._take_due = s(scripts.TAKE_DUE)
        self._due_vacate = s(scripts.DUE_VACATE)
        self._due_member = s(scripts.DUE_MEMBER)
        self._due_count = s(scripts.DUE_COUNT)
        self._subscriptions = s(scripts.SUBSCRIPTIONS)
        # Buffered stream entries: (entry id, fields) in arrival order.
        self._buffer: list[tuple[str, dict[bytes, bytes]]] = []
        self._buffer_since = 0.0
        self._disabled_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._last_sweep = 0.0
        self._last_prune = 0.0
        self._group_ready = False

    # ----------------------------------------------------------------- thread

    def start(self) -> Leader:
        self._thread = threading.Thread(target=self.run, name="clarion-webhooks-leader",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._release(keys=[self.keys.wh_leader], args=[self.token])
        except redis.RedisError:
            pass

    def run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self.step()
                backoff = 0.2
            except redis.RedisError as exc:
                log.warning("webhooks leader: Redis error: %s", exc)
                self._lost()
                self._group_ready = False
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
            except Exception:
                log.exception("webhooks leader: unexpected error")
                self._lost()
                self._stop.wait(1.0)

    # ----------------------------------------------------------------- one step

    def step(self) -> None:
        """Renew or take the lead, then do one round of work (or wait a tick)."""
        tick = self.settings.webhooks.tick
        got = int(self._lead(keys=[self.keys.wh_leader], args=[self.token, LEADER_TTL_MS]))
        if not got:
            self._lost()
            self._stop.wait(tick)
            return
        if got == 2 or not self.leading:
            self.leading = True
            self._ensure_group()
            self._take_over()
        self._ensure_group()
        # Wake for the next due transition or retry rather than a whole tick later.
        self._pump(min(tick, self._next_due_in()))
        self.schedule()

    def _next_due_in(self) -> float:
        """Seconds until the earliest entry of ``P wh:due`` / ``P wh:retry`` (inf if none)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.wh_due, 0, 0, withscores=True)
        pipe.zrange(self.keys.wh_retry, 0, 0, withscores=True)
        firsts = [row[0][1] for row in pipe.execute() if row]
        if not firsts:
            return float("inf")
        return max(0.001, (min(firsts) - now_ms()) / 1000)

    def _lost(self) -> None:
        if self.leading:
            log.info("webhooks leader: lost the lead")
        self.leading = False
        self._buffer = []

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.keys.wh_events, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _take_over(self) -> None:
        """Claim every entry pending for any consumer (a previous leader's unbatched reads)."""
        start = "0-0"
        while True:
            res = self.redis.xautoclaim(self.keys.wh_events, GROUP, self.consumer, 0,
                                        start_id=start, count=500)
            start, entries = res[0], res[1]
            self._add(entries)
            if start in (b"0-0", "0-0") or not entries:
                break

    def _add(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if fields is None:  # deleted meanwhile
                continue
            if not self._buffer:
                self._buffer_since = time.monotonic()
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            self._buffer.append((eid, fields))

    def _pump(self, tick: float) -> None:
        wh = self.settings.webhooks
        if self._buffer:
            wait = max(0.0, self._buffer_since + wh.batch_window - time.monotonic())
        else:
            wait = tick
        block = max(1, int(min(wait, tick) * 1000))
        if self._buffer and wait <= 0:
            block = 0
        if block:
            res = self.redis.xreadgroup(GROUP, self.consumer, {self.keys.wh_events: ">"},
                                        count=max(wh.batch_size * 10, 100), block=block)
        else:
            res = self.redis.xreadgroup(GROUP, self.consumer, {self.keys.wh_events: ">"},
                                        count=max(wh.batch_size * 10, 100))
        for _stream, entries in res or []:
            self._add(entries)
        if self._buffer and (
            time.monotonic() - self._buffer_since >= wh.batch_window
            or len(self._buffer) >= wh.batch_size
        ):
            self.flush()

    # ----------------------------------------------------------------- batching

    def flush(self) -> list[str]:
        """Commit the buffer as deliveries; enqueue them. Returns the pending ids."""
        buffer, self._buffer = self._buffer, []
        if not buffer:
            return []
        wh = self.settings.webhooks
        per_endpoint: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        for _eid, fields in buffer:
            app_id = fields[b"a"].decode()
            name = fields[b"n"].decode()
            channel = fields[b"c"].decode()
            app = self.app_by_id(app_id)
            if app is None:
                log.warning("webhooks: event for unknown app %s dropped", app_id)
                continue
            for e in app.webhooks:
                if ev.endpoint_matches(e, name, channel):
                    per_endpoint[(app_id, e.url)].append(fields[b"e"])
        created = now_ms()
        deliveries: list[Delivery] = []
        for (app_id, url), evs in per_endpoint.items():
            eid = ev.endpoint_id(app_id, url)
            disabled = self._endpoint_disabled(app_id, eid)
            for i in range(0, len(evs), wh.batch_size):
                chunk = evs[i:i + wh.batch_size]
                deliveries.append(Delivery(
                    id=new_delivery_id(created), app_id=app_id, url=url, endpoint_id=eid,
                    events=b"[" + b",".join(chunk) + b"]", created_ms=created,
                    status=DEAD if disabled else PENDING, next_ms=created,
                    reason="endpoint disabled" if disabled else "",
                ))
        keys = [self.keys.wh_events, self.keys.wh_retry]
        args: list[Any] = [GROUP, self.consumer, len(buffer), *[e for e, _ in buffer]]
        lease_until = created + int(wh.lease * 1000)
        for d in deliveries:
            keys += [self.keys.wh_delivery(d.id), self.keys.wh_index(d.app_id, d.status)]
            flat: list[Any] = []
            for k, v in d.fields().items():
                flat += [k, v]
            ttl = self.store.ttl_for(d.status)
            args += [d.id, d.created_ms, lease_until if d.status == PENDING else "",
                     "" if ttl is None else ttl, len(flat), *flat]
        if not int(self._commit(keys=keys, args=args)):
            log.warning("webhooks leader: %d events were taken over by another leader",
                        len(buffer))
            return []
        pending = [d.id for d in deliveries if d.status == PENDING]
        for d in deliveries:
            if d.status == DEAD:
                log.warning("webhook delivery %s to disabled endpoint %s kept as dead",
                            d.id, d.url)
        for delivery_id in pending:
            self._enqueue(delivery_id)
        return pending

    def _endpoint_disabled(self, app_id: str, eid: str) -> bool:
        cached = self._disabled_cache.get((app_id, eid))
        now = time.monotonic()
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        value = self.store.is_disabled(app_id, eid)
        self._disabled_cache[(app_id, eid)] = (now, value)
        return value

    def _enqueue(self, delivery_id: str) -> None:
        try:
            self.enqueue(delivery_id)
        except Exception as exc:  # the lease in P wh:retry brings it back
            log.warning("webhooks leader: enqueue of %s failed: %s", delivery_id, exc)

    # ----------------------------------------------------------------- scheduling

    def schedule(self) -> None:
        now = now_ms()
        self.run_due_transitions(now)
        self.enqueue_due_deliveries(now)
        mono = time.monotonic()
        if mono - self._last_sweep >= max(1.0, self.settings.websocket.node_timeout / 2):
            self._last_sweep = mono
            self.sweep_dead_nodes()
        if mono - self._last_prune >= 60:
            self._last_prune = mono
            self.prune()

    def enqueue_due_deliveries(self, now: int) -> int:
        lease_until = now + int(self.settings.webhooks.lease * 1000)
        ids = self._take_due(keys=[self.keys.wh_retry], args=[now, lease_until, TAKE_LIMIT])
        for i in ids:
            self._enqueue(i.decode())
        return len(ids)

    def run_due_transitions(self, now: int) -> int:
        members = self.redis.zrangebyscore(self.keys.wh_due, "-inf", now, start=0,
                                           num=TAKE_LIMIT)
        k = self.keys
        maxlen = scripts.STREAM_MAXLEN
        fired = 0
        for raw in members:
            member = raw.decode()
            kind, rest = member.split(ev.SEP, 1)
            if kind == "m":
                app_id, channel, user = rest.split(ev.SEP, 2)
            else:
                app_id, channel = rest.split(ev.SEP, 1)
            app = self.app_by_id(app_id)
            if app is None:
                self.redis.zrem(k.wh_due, member)
                continue
            if kind == "v":
                vacated = ev.encode(ev.CHANNEL_VACATED, channel) if ev.wants(
                    app, ev.CHANNEL_VACATED, channel) else b""
                fired += int(self._due_vacate(
                    keys=[k.wh_due, k.wh_counts(app_id, channel), k.wh_reported(app_id, channel),
                          k.wh_events],
                    args=[member, now, vacated, app_id, channel, maxlen]))
            elif kind == "m":
                removed = ev.encode(ev.MEMBER_REMOVED, channel, user_id=user) if ev.wants(
                    app, ev.MEMBER_REMOVED, channel) else b""
                fired += int(self._due_member(
                    keys=[k.wh_due, k.wh_members(app_id, channel),
                          k.presence_members(app_id, channel), k.wh_events],
                    args=[member, now, user, removed, app_id, channel, maxlen]))
            elif kind == "c":
                prefix = ev.subscription_count_prefix(channel) if ev.wants(
                    app, ev.SUBSCRIPTION_COUNT, channel) else b""
                fired += int(self._due_count(
                    keys=[k.wh_due, k.wh_counts(app_id, channel),
                          k.wh_count_reported(app_id, channel), k.wh_events],
                    args=[member, now, prefix, app_id, channel, maxlen]))
            else:
                self.redis.zrem(k.wh_due, member)
        return fired

    def sweep_dead_nodes(self) -> list[str]:
        """Drop the counts of WebSocket nodes whose heartbeat stopped (or that are gone from
        the registry), so their channels get vacated."""
        now = time.time()
        timeout = self.settings.websocket.node_timeout
        swept = []
        for node_b, first_b in self.redis.hgetall(self.keys.wh_nodes).items():
            node = node_b.decode()
            beat = self.redis.zscore(self.keys.nodes, node)
            if beat is not None:
                dead = beat / 1000 < now - timeout
            else:
                dead = int(first_b) / 1000 < now - 2 * timeout
            if dead:
                self.sweep_node(node)
                swept.append(node)
        return swept

    def sweep_node(self, node: str) -> None:
        rows = self.redis.smembers(self.keys.wh_node_channels(node))
        now = now_ms()
        for row in rows:
            app_id, channel = row.decode().split(ev.SEP, 1)
            app = self.app_by_id(app_id)
            if app is None:
                continue
            k, a = subscriptions_call(self.keys, self.settings, app, channel, node, 0, now)
            self._subscriptions(keys=k, args=a)
        self.redis.delete(self.keys.wh_node_channels(node))
        self.redis.hdel(self.keys.wh_nodes, node)
        log.info("webhooks: swept %d channel counts of dead node %s", len(rows), node)

    def prune(self) -> None:
        wh = self.settings.webhooks
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        all_apps = self.apps.view().all() if self.apps is not None else self.settings.apps
        for app in all_apps:
            pipe.zremrangebyscore(self.keys.wh_index(app.id, DELIVERED), "-inf",
                                  now - int(wh.delivered_retention_hours * 3600_000))
            pipe.zremrangebyscore(self.keys.wh_index(app.id, DEAD), "-inf",
                                  now - int(wh.dead_retention_hours * 3600_000))
        pipe.execute()


__all__ = ["Leader", "GROUP", "due_member"]
