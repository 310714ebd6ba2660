"""Beams publishes in Redis: the request, its progress, each device's outcome, its counters.

Key schema (``P`` = ``settings.redis.key_prefix``), every key but ``bps`` expiring
``push.status_ttl`` seconds after the publish is accepted:

| key                  | type   | holds                                                        |
|----------------------|--------|--------------------------------------------------------------|
| P bp:{app}:{pid}     | hash   | kind (interests/users), targets, payload (JSON), state, step,|
|                      |        | ti/cur (expansion position), counters (also per platform,    |
|                      |        | ``{platform}:{counter}``), errors, timestamps                |
| P bpo:{app}:{pid}    | hash   | device id -> outcome: p pending (claimed, not yet sent),     |
|                      |        | s sending (its batch went to the provider, no answer yet),   |
|                      |        | d delivered, x removed, f failed, w waiting for a retry,     |
|                      |        | u unknown (the run sending it died before the answer)        |
| P bpr:{app}:{pid}    | zset   | device id -> when its next attempt is due (unix ms); a split |
|                      |        | publish's part N>0 has its own, ``bpr:{app}:{pid}~N``        |
| P bpa:{app}:{pid}    | hash   | device id -> attempts made                                   |
| P bpl:{app}:{pid}    | string | lease held by the task run working on the publish (part N>0: |
|                      |        | ``bpl:{app}:{pid}~N``)                                       |
| P bpu:{app}:{pid}    | hash   | user -> path of a deliver-live-else-push publish (push, live,|
|                      |        | live+push, wait:{sign-outs}), see workers/push/live.py       |
| P brl:{app}:{second} | string | publish requests in that second (rate limit), 2 s            |
| P bpx:{app}          | list   | the app's latest publish ids, newest first (at most RECENT), |
|                      |        | for the dashboard; expires like the publishes                |
| P bps:{app}          | hash   | the app's cumulative counters, NOT expiring (metrics):       |
|                      |        | ``publishes``, ``{platform}:{counter}`` for delivered,       |
|                      |        | failed, retried, removed (platform: the device id prefix)    |

Counters in ``bp``: ``devices`` (distinct devices targeted), ``delivered``, ``failed``,
``removed`` (dead tokens whose device was deleted), ``retried`` (attempts rescheduled) and
``unknown`` (in doubt: sent by a run that died before the provider answered; never sent again).
The same five outcome counters are added, per platform, to the app's cumulative ``bps`` hash in
the same transaction (:meth:`PublishStore.totals`), which the API's ``/metrics`` reads at
scrape time: workers cannot be scraped, Redis can.
``state`` goes ``queued`` -> ``running`` -> ``done``.

A publish to many devices is split into ``parts`` (decided once, by its first run) that task
runs of several worker processes work on at once: part N sends to the devices whose
``crc32(id) % parts == N``, each part with its own lease, step (``step~N``), expansion position
(``ti~N``/``cur~N``) and retries, so what follows holds per part as it holds for an unsplit
publish; ``done~N`` and ``parts_done`` count the parts finished, and the publish is done with
the last of them. Part 0 uses the unsuffixed fields and keys. ``errors`` is a JSON object
``{platform: description}`` for platforms whose credentials were refused: their remaining
devices are counted failed without being sent to.

The outcome hash makes delivery at most once per device: a page re-read after a worker died, a
device in two interests of one publish, or an SSCAN duplicate is sent to only if it has no outcome
yet or is still pending (claimed, but its batch never went to the provider). Each batch is marked
``s`` (sending) in one write before it goes to the provider; a device found ``s`` by a later run
(its run died before the provider's answer was recorded) is not sent again but recorded ``u``
and counted ``unknown``: the provider may or may not have accepted it. A retry the code
scheduled itself (``w``, after a 429/503/timeout) is an explicit new attempt: it is marked ``s``
again before it is sent.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from gateway.state.keys import KeySpace
from gateway.state.redis_client import is_cluster, register_script

DELIVERED, REMOVED, FAILED, WAITING, PENDING = "d", "x", "f", "w", "p"
SENDING, UNKNOWN = "s", "u"
COUNTERS = ("devices", "delivered", "failed", "retried", "removed", "unknown")
OUTCOME_COUNTERS = ("delivered", "failed", "retried", "removed", "unknown")
PLATFORMS = ("fcm", "apns", "web")
# Publish ids listed per app for the dashboard.
RECENT = 50


def _part(part: int) -> str:
    """The suffix of a part's own keys and fields (part 0's are the unsplit publish's)."""
    return f"~{part}" if part else ""


def part_of(device_id: str, parts: int) -> int:
    """Which part of a split publish sends to ``device_id`` (stable across processes)."""
    return zlib.crc32(device_id.encode()) % parts if parts > 1 else 0


def platform_of(device_id: str) -> str:
    """The platform of a Beams device id (``fcm-…``, ``apns-…``, ``web-…``)."""
    head = device_id.partition("-")[0]
    return head if head in PLATFORMS else "other"


def new_publish_id() -> str:
    return f"pubid-{uuid.uuid4()}"


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else v


@dataclass(slots=True)
class Publish:
    app_id: str
    publish_id: str
    kind: str
    targets: list[str]
    payload: dict[str, Any]
    state: str
    step: int
    target_index: int
    cursor: int
    errors: dict[str, str] = field(default_factory=dict)
    part: int = 0  # the part this record's step and position are of
    parts: int = 1  # how many parts the publish was split into (1 until decided)


class PublishKeys(KeySpace):
    def publish(self, app: str, pid: str) -> str:
        return f"{self.prefix}bp:{self.app(app)}:{pid}"

    def outcomes(self, app: str, pid: str) -> str:
        return f"{self.prefix}bpo:{self.app(app)}:{pid}"

    def retries(self, app: str, pid: str, part: int = 0) -> str:
        return f"{self.prefix}bpr:{self.app(app)}:{pid}{_part(part)}"

    def attempts(self, app: str, pid: str) -> str:
        return f"{self.prefix}bpa:{self.app(app)}:{pid}"

    def user_paths(self, app: str, pid: str) -> str:
        return f"{self.prefix}bpu:{self.app(app)}:{pid}"

    def lease(self, app: str, pid: str, part: int = 0) -> str:
        return f"{self.prefix}bpl:{self.app(app)}:{pid}{_part(part)}"

    def rate(self, app: str, second: int) -> str:
        return f"{self.prefix}brl:{self.app(app)}:{second}"

    def totals(self, app: str) -> str:
        return f"{self.prefix}bps:{self.app(app)}"

    def recent(self, app: str) -> str:
        return f"{self.prefix}bpx:{self.app(app)}"


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


# One command per page instead of one per device (the Python side of a pipelined command
# costs more than Redis does): each id is marked PENDING unless it has an outcome; returns,
# per id, "n" (new to the publish) or the outcome it already had.
_CLAIM = """
local out, new = {}, 0
for i = 2, #ARGV do
  if redis.call('hsetnx', KEYS[1], ARGV[i], 'p') == 1 then
    new = new + 1
    out[i - 1] = 'n'
  else
    out[i - 1] = redis.call('hget', KEYS[1], ARGV[i])
  end
end
if new > 0 then redis.call('hincrby', KEYS[2], 'devices', new) end
redis.call('expire', KEYS[1], ARGV[1])
return out
"""


# A part is counted done once; the publish is done when every part is.
_FINISH_PART = """
local n
if redis.call('hsetnx', KEYS[1], 'done' .. ARGV[1], '1') == 1 then
  n = redis.call('hincrby', KEYS[1], 'parts_done', 1)
else
  n = tonumber(redis.call('hget', KEYS[1], 'parts_done'))
end
if n >= tonumber(ARGV[2]) then
  redis.call('hset', KEYS[1], 'state', 'done')
  redis.call('hsetnx', KEYS[1], 'finished', ARGV[3])
  return 1
end
return 0
"""


class PublishStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl: int = 7 * 86400) -> None:
        self.r = client
        self.keys = PublishKeys(prefix, is_cluster(client))
        self.ttl = ttl
        self._release = register_script(client, _RELEASE)
        self._renew = register_script(client, _RENEW)
        self._claim = register_script(client, _CLAIM)
        self._finish_part = register_script(client, _FINISH_PART)

    # ------------------------------------------------------------------ API side

    def rate_limited(self, app: str, limit: int) -> bool:
        """Count one publish request; True if the instance is over ``limit`` this second."""
        key = self.keys.rate(app, int(time.time()))
        pipe = self.r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 2)
        count, _ = pipe.execute()
        return int(count) > limit

    def create(
        self, app: str, pid: str, kind: str, targets: Sequence[str], payload: dict[str, Any]
    ) -> None:
        key = self.keys.publish(app, pid)
        mapping: dict[str, str] = {
            "kind": kind,
            "targets": json.dumps(list(targets)),
            "payload": json.dumps(payload),
            "state": "queued",
            "step": "0",
            "ti": "0",
            "cur": "0",
            "created": f"{time.time():.3f}",
        }
        mapping.update({c: "0" for c in COUNTERS})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl)
        pipe.lpush(self.keys.recent(app), pid)
        pipe.ltrim(self.keys.recent(app), 0, RECENT - 1)
        pipe.expire(self.keys.recent(app), self.ttl)
        pipe.execute()

    def recent(self, app: str, limit: int = RECENT) -> list[dict[str, Any]]:
        """Status of the app's latest publishes, newest first (those not expired)."""
        ids = [_s(i) for i in self.r.lrange(self.keys.recent(app), 0, limit - 1)]
        return [s for s in (self.status(app, pid) for pid in ids if pid) if s is not None]

    def count_accepted(self, app: str) -> None:
        """Count a publish that was stored and enqueued (the ``publishes`` metric)."""
        self.r.hincrby(self.keys.totals(app), "publishes", 1)

    def totals(self, apps: Sequence[str]) -> dict[str, dict[str, int]]:
        """Cumulative counters per app (one round trip): ``{app: {field: n}}`` with fields
        ``publishes`` and ``{platform}:{delivered|failed|retried|removed}``."""
        if not apps:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for app in apps:
            pipe.hgetall(self.keys.totals(app))
        return {
            app: {_s(k): int(v) for k, v in raw.items()}
            for app, raw in zip(apps, pipe.execute(), strict=True)
        }

    def status(self, app: str, pid: str) -> dict[str, Any] | None:
        """What ``GET …/publishes/{pid}`` and ``clarion push status`` show."""
        raw = self.r.hgetall(self.keys.publish(app, pid))
        if not raw:
            return None
        row = {_s(k): _s(v) for k, v in raw.items()}
        out: dict[str, Any] = {"publishId": pid, "status": row.get("state", "queued")}
        for c in COUNTERS:
            out[c] = int(row.get(c) or 0)
        parts = int(row.get("parts") or 1)
        pipe = self.r.pipeline(transaction=False)
        for part in range(parts):
            pipe.zcard(self.keys.retries(app, pid, part))
        out["pending"] = sum(int(n) for n in pipe.execute())
        out["errors"] = json.loads(row.get("errors") or "{}")
        out["platforms"] = _by_platform(row)
        paths = self.r.hgetall(self.keys.user_paths(app, pid))
        if paths:
            out["users"] = {_s(u): "pending" if _s(p).startswith("wait:") else _s(p)
                            for u, p in paths.items()}
        out["createdAt"] = float(row["created"]) if row.get("created") else None
        out["finishedAt"] = float(row["finished"]) if row.get("finished") else None
        return out

    # ------------------------------------------------------------------ worker side

    def load(self, app: str, pid: str, part: int = 0) -> Publish | None:
        """The publish as ``part`` sees it (its own step and expansion position)."""
        raw = self.r.hgetall(self.keys.publish(app, pid))
        if not raw or b"kind" not in raw and "kind" not in raw:
            return None
        row = {_s(k): _s(v) for k, v in raw.items()}
        own = _part(part)
        return Publish(
            app_id=app,
            publish_id=pid,
            kind=row["kind"] or "",
            targets=json.loads(row.get("targets") or "[]"),
            payload=json.loads(row.get("payload") or "{}"),
            state=row.get("state") or "queued",
            step=int(row.get("step" + own) or 0),
            target_index=int(row.get("ti" + own) or 0),
            cursor=int(row.get("cur" + own) or 0),
            errors=json.loads(row.get("errors") or "{}"),
            part=part,
            parts=int(row.get("parts") or 1),
        )

    def split(self, app: str, pid: str, parts: int) -> int:
        """Split the publish into ``parts`` unless it was already split; returns the number
        of parts it has (a redelivered first step gets the first decision)."""
        key = self.keys.publish(app, pid)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(key, "parts", str(parts))
        pipe.hget(key, "parts")
        return int(pipe.execute()[1])

    def acquire_lease(
        self, app: str, pid: str, token: str, seconds: float, part: int = 0
    ) -> bool:
        key = self.keys.lease(app, pid, part)
        return bool(self.r.set(key, token, nx=True, px=int(seconds * 1000)))

    def renew_lease(self, app: str, pid: str, token: str, seconds: float, part: int = 0) -> bool:
        """Extend our lease; False if it was lost (expired and taken by another run)."""
        key = self.keys.lease(app, pid, part)
        return bool(self._renew(keys=[key], args=[token, int(seconds * 1000)]))

    def release_lease(self, app: str, pid: str, token: str, part: int = 0) -> None:
        self._release(keys=[self.keys.lease(app, pid, part)], args=[token])

    def begin_step(self, app: str, pid: str, step: int, part: int = 0) -> None:
        self.r.hset(self.keys.publish(app, pid),
                    mapping={"step" + _part(part): str(step), "state": "running"})

    def save_position(
        self, app: str, pid: str, target_index: int, cursor: int, part: int = 0
    ) -> None:
        own = _part(part)
        self.r.hset(
            self.keys.publish(app, pid),
            mapping={"ti" + own: str(target_index), "cur" + own: str(cursor)},
        )

    def set_error(self, app: str, pid: str, platform: str, description: str) -> dict[str, str]:
        key = self.keys.publish(app, pid)
        errors = json.loads(_s(self.r.hget(key, "errors")) or "{}")
        errors.setdefault(platform, description)
        self.r.hset(key, "errors", json.dumps(errors))
        return errors

    def finish(self, app: str, pid: str) -> None:
        self.r.hset(
            self.keys.publish(app, pid),
            mapping={"state": "done", "finished": f"{time.time():.3f}"},
        )

    def finish_part(self, app: str, pid: str, part: int, parts: int) -> bool:
        """Count ``part`` done (once); True when that made every part done, and with it the
        publish (then marked done)."""
        return bool(self._finish_part(keys=[self.keys.publish(app, pid)],
                                      args=[_part(part) or "~0", parts, f"{time.time():.3f}"]))

    def claim(self, app: str, pid: str, device_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(to_send, lost)``: the devices of ``device_ids`` to send to now, and those found
        SENDING (sent by a run that died before the provider answered: in doubt, not to be
        sent again; the caller records them UNKNOWN). Counts the devices new to the publish.

        A device new to the publish is marked PENDING and counted in ``devices``. A device
        already PENDING (claimed by a run that died before sending it) is returned again but
        not counted again; one with any other outcome is left out. Deduplicated, order kept.
        """
        unique = list(dict.fromkeys(device_ids))
        if not unique:
            return [], []
        keys = [self.keys.outcomes(app, pid), self.keys.publish(app, pid)]
        states = [_s(x) for x in self._claim(keys=keys, args=[self.ttl, *unique])]
        pairs = list(zip(unique, states, strict=True))
        return [d for d, s in pairs if s in ("n", PENDING)], [d for d, s in pairs if s == SENDING]

    def states(self, app: str, pid: str, device_ids: Sequence[str]) -> list[str | None]:
        """Each device's outcome code in the publish (None: not claimed)."""
        if not device_ids:
            return []
        return [_s(s) for s in self.r.hmget(self.keys.outcomes(app, pid), device_ids)]

    def mark_sending(self, app: str, pid: str, device_ids: Sequence[str]) -> None:
        """Mark a batch SENDING (one write) just before it goes to the provider: from then on
        a run that takes over never sends these devices again (see :meth:`claim`)."""
        if not device_ids:
            return
        okey = self.keys.outcomes(app, pid)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(okey, mapping={d: SENDING for d in device_ids})
        pipe.expire(okey, self.ttl)
        pipe.execute()

    def attempts(self, app: str, pid: str, device_ids: Sequence[str]) -> list[int]:
        if not device_ids:
            return []
        return [int(a or 0) for a in self.r.hmget(self.keys.attempts(app, pid), device_ids)]

    def due_retries(self, app: str, pid: str, limit: int, part: int = 0) -> list[str]:
        now_ms = int(time.time() * 1000)
        key = self.keys.retries(app, pid, part)
        return [_s(i) for i in self.r.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)]

    def next_retry_at(self, app: str, pid: str, part: int = 0) -> float | None:
        first = self.r.zrange(self.keys.retries(app, pid, part), 0, 0, withscores=True)
        return first[0][1] / 1000.0 if first else None

    def record(
        self,
        app: str,
        pid: str,
        outcomes: Sequence[tuple[str, str, float | None]],
        part: int = 0,
    ) -> None:
        """Record ``(device_id, outcome, retry_at)`` rows of ``part`` in one pipeline.

        ``outcome`` is DELIVERED, REMOVED, FAILED, UNKNOWN (sent, answer lost with its run) or
        WAITING (then ``retry_at`` is the unix time of the next attempt).
        """
        if not outcomes:
            return
        pkey = self.keys.publish(app, pid)
        okey = self.keys.outcomes(app, pid)
        rkey = self.keys.retries(app, pid, part)
        akey = self.keys.attempts(app, pid)
        counts = {DELIVERED: 0, REMOVED: 0, FAILED: 0, WAITING: 0, UNKNOWN: 0}
        by_platform: dict[tuple[str, str], int] = {}
        waiting: dict[str, int] = {}
        for device_id, outcome, retry_at in outcomes:
            counts[outcome] += 1
            slot = (platform_of(device_id), outcome)
            by_platform[slot] = by_platform.get(slot, 0) + 1
            if outcome == WAITING:
                waiting[device_id] = int((retry_at or time.time()) * 1000)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(okey, mapping={device_id: outcome for device_id, outcome, _ in outcomes})
        # Only sends that end WAITING are counted: every earlier send of a device that is
        # retried ended WAITING too, so this is the attempts made when a retry is decided.
        for device_id in waiting:
            pipe.hincrby(akey, device_id, 1)
        if waiting:
            pipe.zadd(rkey, waiting)
        done = [device_id for device_id, outcome, _ in outcomes if outcome != WAITING]
        if done:
            pipe.zrem(rkey, *done)
        for outcome, counter in (
            (DELIVERED, "delivered"),
            (REMOVED, "removed"),
            (FAILED, "failed"),
            (WAITING, "retried"),
            (UNKNOWN, "unknown"),
        ):
            if counts[outcome]:
                pipe.hincrby(pkey, counter, counts[outcome])
        names = {
            DELIVERED: "delivered",
            REMOVED: "removed",
            FAILED: "failed",
            WAITING: "retried",
            UNKNOWN: "unknown",
        }
        tkey = self.keys.totals(app)
        for (platform, outcome), n in by_platform.items():
            name = f"{platform}:{names[outcome]}"
            pipe.hincrby(pkey, name, n)  # this publish, per platform (its status)
            pipe.hincrby(tkey, name, n)  # the app's cumulative counters (metrics)
        for key in (okey, rkey, akey):
            pipe.expire(key, self.ttl)
        pipe.execute()


def _by_platform(row: dict[str, str]) -> dict[str, dict[str, int]]:
    """``{platform: {outcome: n}}`` from a publish record's ``{platform}:{outcome}`` fields
    (only the platforms and outcomes that happened)."""
    out: dict[str, dict[str, int]] = {}
    for name, value in row.items():
        platform, sep, outcome = name.partition(":")
        if sep and platform in PLATFORMS:
            out.setdefault(platform, {})[outcome] = int(value)
    return out
