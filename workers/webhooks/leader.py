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

On Redis Cluster each app has its own stream, due and retry sets (in the app's slot, see
gateway/state/keys.py), so every script above keeps its single-slot atomicity: the leader
serves them app by app (a *shard*; the one shard of a standalone Redis is ``""``, the global
keys), polling the streams rather than blocking on one: the apps woken in ``P wh:wake``, those
with something due, and every app every ``ALL_APPS_EVERY`` seconds (see :meth:`Leader.shards`;
leftovers of an app whose webhooks were removed are still taken, as on a standalone Redis).
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
    now_ms,
)

log = logging.getLogger("clarion.webhooks.leader")

GROUP = "wh"
LEADER_TTL_MS = 5000
TAKE_LIMIT = 500
ALL_APPS_EVERY = 5.0
# The one shard of a standalone Redis: Keys.wh_*_of("") are the global keys there.
GLOBAL = ""

Entry = tuple[str, str, dict[bytes, bytes]]  # shard, stream entry id, fields


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
        self._take_wake = s(scripts.TAKE_WAKE)
        self._due_vacate = s(scripts.DUE_VACATE)
        self._due_member = s(scripts.DUE_MEMBER)
        self._due_count = s(scripts.DUE_COUNT)
        self._subscriptions = s(
            scripts.SUBSCRIPTIONS_APP if keys.cluster else scripts.SUBSCRIPTIONS)
        # Buffered stream entries, in arrival order.
        self._buffer: list[Entry] = []
        self._buffer_since = 0.0
        self._disabled_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._last_sweep = 0.0
        self._last_prune = 0.0
        self._last_all = 0.0
        # Shards whose consumer group exists and whose pending entries were taken over.
        self._ready: set[str] = set()
        # Apps with webhooks (Redis Cluster), as of the last shards().
        self._hooked: set[str] = set()
        # shard -> earliest score of its due and retry sets (None: empty), per step.
        self._firsts: dict[str, tuple[float | None, float | None]] = {}
        # Redis Cluster: app -> when its earliest due transition or retry comes due.
        self._next_look: dict[str, float] = {}

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
            self._ready = set()
            self._last_all = 0.0
            self._next_look = {}
        shards = self.shards()
        for shard in shards:
            if shard not in self._ready and self._ensure_group(shard):
                self._take_over(shard)
                self._ready.add(shard)
        # Wake for the next due transition or retry rather than a whole tick later.
        self._pump(min(tick, self._next_due_in(shards)),
                   [shard for shard in shards if shard in self._ready])
        self.schedule(shards)

    def shards(self) -> list[str]:
        """The queues to serve this step: the global ones, or on Redis Cluster the apps
        worth a look: those woken (``P wh:wake``, written by reporters and status changes
        after their work), those whose earliest due transition or retry seen so far is due,
        and every app each ALL_APPS_EVERY seconds and when taking the lead (what a lost hint
        or a lost leader left behind)."""
        if not self.keys.cluster:
            return [GLOBAL]
        apps = self.apps.view().all() if self.apps is not None else self.settings.apps
        self._hooked = {app.id for app in apps if app.webhooks}
        now = now_ms()
        woken = [i.decode() for i in self._take_wake(keys=[self.keys.wh_wake],
                                                     args=[now, TAKE_LIMIT])]
        mono = time.monotonic()
        if mono - self._last_all >= ALL_APPS_EVERY:
            self._last_all = mono
            return [app.id for app in apps]
        known = {app.id for app in apps}
        looks = [shard for shard, at in self._next_look.items() if at <= now]
        # An app the view does not have yet (up to a second old) is looked up in the store.
        return [shard for shard in dict.fromkeys([*woken, *looks])
                if shard in known or self.app_by_id(shard) is not None]

    def all_shards(self) -> list[str]:
        if not self.keys.cluster:
            return [GLOBAL]
        apps = self.apps.view().all() if self.apps is not None else self.settings.apps
        return [app.id for app in apps]

    def _next_due_in(self, shards: list[str]) -> float:
        """Seconds until the earliest entry of ``P wh:due`` / ``P wh:retry`` (inf if none)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.zrange(self.keys.wh_due_of(shard), 0, 0, withscores=True)
            pipe.zrange(self.keys.wh_retry_of(shard), 0, 0, withscores=True)
        rows = pipe.execute()
        self._firsts = {
            shard: (rows[2 * i][0][1] if rows[2 * i] else None,
                    rows[2 * i + 1][0][1] if rows[2 * i + 1] else None)
            for i, shard in enumerate(shards)}
        firsts = [row[0][1] for row in rows if row]
        if self.keys.cluster:
            # Remembered for the apps not looked at in the next steps.
            for shard, pair in self._firsts.items():
                seen = [score for score in pair if score is not None]
                if seen:
                    self._next_look[shard] = min(seen)
                else:
                    self._next_look.pop(shard, None)
            firsts = list(self._next_look.values())
        if not firsts:
            return float("inf")
        return max(0.001, (min(firsts) - now_ms()) / 1000)

    def _due_shards(self, shards: list[str], which: int, now: int) -> list[str]:
        """On Redis Cluster, the shards whose earliest due transition (``which`` 0) or retry
        (1) seen by _next_due_in is due by ``now``: an idle app costs its stream read and two
        ZRANGEs per step, not a scan of each set. (What was added since has a later score:
        a debounce, a lease, a retry delay; a replay's "now" waits one step.) On one Redis
        every set is scanned each step, as before."""
        if not self.keys.cluster:
            return shards
        out = []
        for shard in shards:
            first = self._firsts.get(shard, (0, 0))[which]
            if first is not None and first <= now:
                out.append(shard)
        return out

    def _lost(self) -> None:
        if self.leading:
            log.info("webhooks leader: lost the lead")
        self.leading = False
        self._buffer = []
        self._ready = set()
        # A new lead looks at every app first.
        self._last_all = 0.0
        self._next_look = {}

    def _ensure_group(self, shard: str) -> bool:
        """Make the shard's consumer group (and stream); an app without webhooks gets none
        until it has a stream (entries left from before its webhooks were removed): False
        meanwhile. The group reads from the start of the stream, so entries written before
        it existed are read all the same."""
        make = shard == GLOBAL or shard in self._hooked
        try:
            self.redis.xgroup_create(self.keys.wh_events_of(shard), GROUP, id="0",
                                     mkstream=make)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return True
            if not make and "requires the key to exist" in str(exc):
                return False
            raise
        return True

    def _take_over(self, shard: str) -> None:
        """Claim every entry pending for any consumer (a previous leader's unbatched reads)."""
        start = "0-0"
        while True:
            res = self.redis.xautoclaim(self.keys.wh_events_of(shard), GROUP, self.consumer,
                                        0, start_id=start, count=500)
            start, entries = res[0], res[1]
            self._add(shard, entries)
            if start in (b"0-0", "0-0") or not entries:
                break

    def _add(self, shard: str, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if fields is None:  # deleted meanwhile
                continue
            if not self._buffer:
                self._buffer_since = time.monotonic()
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            self._buffer.append((shard, eid, fields))

    def _pump(self, tick: float, shards: list[str]) -> None:
        wh = self.settings.webhooks
        if self._buffer:
            wait = max(0.0, self._buffer_since + wh.batch_window - time.monotonic())
        else:
            wait = tick
        block = max(1, int(min(wait, tick) * 1000))
        if self._buffer and wait <= 0:
            block = 0
        count = max(wh.batch_size * 10, 100)
        if self.keys.cluster:
            self._poll(shards, count, block)
        else:
            stream = {self.keys.wh_events: ">"}
            if block:
                res = self.redis.xreadgroup(GROUP, self.consumer, stream, count=count,
                                            block=block)
            else:
                res = self.redis.xreadgroup(GROUP, self.consumer, stream, count=count)
            for _stream, entries in res or []:
                self._add(GLOBAL, entries)
        if self._buffer and (
            time.monotonic() - self._buffer_since >= wh.batch_window
            or len(self._buffer) >= wh.batch_size
        ):
            self.flush()

    def _poll(self, shards: list[str], count: int, block_ms: int) -> None:
        """Read every shard's stream without blocking (one Redis Cluster command cannot read
        streams of several slots); sleep ``block_ms`` if nothing came."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.xreadgroup(GROUP, self.consumer, {self.keys.wh_events_of(shard): ">"},
                            count=count)
        got = False
        for shard, res in zip(shards, pipe.execute() if shards else [], strict=True):
            for _stream, entries in res or []:
                got = got or bool(entries)
                self._add(shard, entries)
        if not got and block_ms:
            self._stop.wait(block_ms / 1000)

    # ----------------------------------------------------------------- batching

    def flush(self) -> list[str]:
        """Commit the buffer as deliveries (one commit per shard); enqueue them. Returns the
        pending ids."""
        buffer, self._buffer = self._buffer, []
        per_shard: dict[str, list[Entry]] = defaultdict(list)
        for entry in buffer:
            per_shard[entry[0]].append(entry)
        pending: list[str] = []
        for shard, entries in per_shard.items():
            pending += self._flush_shard(shard, entries)
        return pending

    def _flush_shard(self, shard: str, buffer: list[Entry]) -> list[str]:
        wh = self.settings.webhooks
        per_endpoint: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        for _shard, _eid, fields in buffer:
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
                    id=self.store.new_id(app_id, created), app_id=app_id, url=url, endpoint_id=eid,
                    events=b"[" + b",".join(chunk) + b"]", created_ms=created,
                    status=DEAD if disabled else PENDING, next_ms=created,
                    reason="endpoint disabled" if disabled else "",
                ))
        keys = [self.keys.wh_events_of(shard), self.keys.wh_retry_of(shard)]
        args: list[Any] = [GROUP, self.consumer, len(buffer), *[e for _, e, _ in buffer]]
        lease_until = created + int(wh.lease * 1000)
        for d in deliveries:
            keys += [self.keys.wh_delivery(d.id, d.app_id),
                     self.keys.wh_index(d.app_id, d.status)]
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
        if self.keys.cluster and pending:  # the leases in the retry set: look again then
            self._next_look[shard] = min(lease_until, self._next_look.get(shard, lease_until))
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

    def schedule(self, shards: list[str] | None = None) -> None:
        now = now_ms()
        if shards is None:
            self.run_due_transitions(now)
            self.enqueue_due_deliveries(now)
        else:
            self.run_due_transitions(now, self._due_shards(shards, 0, now))
            self.enqueue_due_deliveries(now, self._due_shards(shards, 1, now))
        mono = time.monotonic()
        if mono - self._last_sweep >= max(1.0, self.settings.websocket.node_timeout / 2):
            self._last_sweep = mono
            self.sweep_dead_nodes()
        if mono - self._last_prune >= 60:
            self._last_prune = mono
            self.prune()

    def enqueue_due_deliveries(self, now: int, shards: list[str] | None = None) -> int:
        lease_until = now + int(self.settings.webhooks.lease * 1000)
        taken = 0
        for shard in self.all_shards() if shards is None else shards:
            ids = self._take_due(keys=[self.keys.wh_retry_of(shard)],
                                 args=[now, lease_until, TAKE_LIMIT])
            for i in ids:
                self._enqueue(i.decode())
            taken += len(ids)
        return taken

    def run_due_transitions(self, now: int, shards: list[str] | None = None) -> int:
        return sum(self._run_due_transitions(now, shard)
                   for shard in (self.all_shards() if shards is None else shards))

    def _run_due_transitions(self, now: int, shard: str) -> int:
        k = self.keys
        due = k.wh_due_of(shard)
        members = self.redis.zrangebyscore(due, "-inf", now, start=0, num=TAKE_LIMIT)
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
                self.redis.zrem(due, member)
                continue
            if kind == "v":
                vacated = ev.encode(ev.CHANNEL_VACATED, channel) if ev.wants(
                    app, ev.CHANNEL_VACATED, channel) else b""
                fired += int(self._due_vacate(
                    keys=[due, k.wh_counts(app_id, channel), k.wh_reported(app_id, channel),
                          k.wh_events_of(app_id)],
                    args=[member, now, vacated, app_id, channel, maxlen]))
            elif kind == "m":
                removed = ev.encode(ev.MEMBER_REMOVED, channel, user_id=user) if ev.wants(
                    app, ev.MEMBER_REMOVED, channel) else b""
                fired += int(self._due_member(
                    keys=[due, k.wh_members(app_id, channel),
                          k.presence_members(app_id, channel), k.wh_events_of(app_id)],
                    args=[member, now, user, removed, app_id, channel, maxlen]))
            elif kind == "c":
                prefix = ev.subscription_count_prefix(channel) if ev.wants(
                    app, ev.SUBSCRIPTION_COUNT, channel) else b""
                fired += int(self._due_count(
                    keys=[due, k.wh_counts(app_id, channel),
                          k.wh_count_reported(app_id, channel), k.wh_events_of(app_id)],
                    args=[member, now, prefix, app_id, channel, maxlen]))
            else:
                self.redis.zrem(due, member)
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
            if self.keys.cluster:  # its vacates are due after the debounce
                self._next_look[app_id] = min(now, self._next_look.get(app_id, now))
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
