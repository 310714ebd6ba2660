"""Each channel's log: every accepted event, with its serial and its predecessor's.

The log is the truth about what a channel was sent; everything that rings a doorbell about it
(the Celery task, the bus message, a rider) may be lost or repeated without losing or
repeating an event, because whoever is behind reads the log and whoever is ahead drops by
serial (docs/reliability.md).

Serials are chained: an event's serial is ``max(previous + 1, Redis time in microseconds)``
and the event carries its predecessor's serial (``prev``). So serials only grow, even across
a counter that expired or a Redis that lost its data, and a reader holding serial ``S`` knows
it missed nothing exactly when the next event it sees has ``prev == S``. A chain that does
not link up (``prev`` differs from what the reader has) means events were lost to the reader:
trimmed from the log, or the log itself was lost (Redis flushed, replaced, or rolled back by
a failover). That is reported, never mistaken for "nothing missed": the chain is the log's
epoch, checked at every event.

The API accepts through ``accept_and_enqueue`` (one Lua script, atomic for the request): each
event gets its serial and is appended to its channel's log, and the request's delivery task is
queued (its message written by gateway/api/deliver_message.py, serials filled in by the
script) or the request rides on a task already queued (gateway/state/riders.py). A request
with an idempotency key is accepted only if the key was not used within its window, and the
key is recorded by the same script (gateway/state/idempotency.py). Events stay in the log for
``history.retention`` seconds, at most ``history.max_events`` per channel (the app's own
when it sets them).

Log members are ``"<serial> <prev> <entry JSON>"``; the entry is ``{"e": event, "d": data,
"x": excluded socket id}``. Members written before chained serials (``"<serial> <entry>"``,
serials then counted up by one) are read with ``prev = serial - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from config.settings import HistorySettings
from gateway.protocol.resume import failure
from gateway.state.idempotency import SEEN, IdempotencyClaim, SeenRequest
from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# How long a channel's serial counter outlives its last event (at least): long enough that a
# node or client holding a serial of a quiet channel finds the chain intact when it wakes up.
# A counter that expired starts again with prev = 0, which reads as "history lost".
SERIAL_TTL = 86400

# KEYS: serial key and log key of each event, in pairs; optionally then the queue key, the
# armed key and the pending key (gateway/state/keys.py, lv:*); optionally last the request's
# idempotency key (idem:*).
# ARGV: max events, retention seconds, serial ttl, n (events), armed ms, pending ttl, "1" if
# floors follow the entries (else "0"), one entry JSON per event, then (with "1") each event's
# floor: the serial the caller gave its channel last (0: none known); its prev is at least that
# (gateway/state/chain_heads.py). Then (with the queue key) the task message's head, its n + 1
# body pieces between which the events' "serial,prev" go, and its tail
# (gateway/api/deliver_message.py), then (with the idempotency key) the request's fingerprint,
# its response ("" if not known yet) and the key's window in ms.
# An empty head (a broker other than this Redis) pushes nothing: the script only decides, and
# the caller sends the task (gateway/api/live_sender.py).
# Returns serial and prev of each event, then (with the queue key) 1 if a task was queued (or,
# with an empty head, is to be sent by the caller). If
# the idempotency key was used within its window, accepts nothing and returns SEEN (-1), the
# first request's fingerprint, its response (nil if not saved yet) and how many us ago it was
# accepted (-1 once its response is saved): gateway/state/idempotency.py.
#
# The task is queued only if no earlier one is waiting (SET NX on the armed key, which the
# task deletes when it drains): otherwise the body joins the pending list that task drains. So
# under load many requests share one task, and at a trickle each request has its own. The
# armed key expires after "armed ms" so that a task lost with a killed worker cannot keep
# later requests from queueing theirs for long; nodes fill what such a task carried from the
# log meanwhile.
#
# Max events and retention are the app's (apps may set their own); the pending list is shared
# by every app, so it gets the deployment's retention.
ARMED_MS = 5000

ACCEPT_LUA = """
local cap = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local floors = ARGV[7] == '1' and 7 + n or nil
local extra = #KEYS - 2 * n
local idem = extra % 3 == 1 and KEYS[#KEYS]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if idem then
  local seen = redis.call('HMGET', idem, 'f', 'r', 't')
  if seen[1] then
    return {-1, seen[1], seen[2], seen[3] and now - tonumber(seen[3]) or -1}
  end
end
local expired = string.format('(%d', now - retention * 1000000)
local nows = string.format('%d', now)
-- Numbers given to redis.call are formatted as floats each time: pass strings.
local keep = string.format('%d', -(cap + 1))
local out = {}
local links = {}
for i = 1, 2 * n, 2 do
  local sk, hk = KEYS[i], KEYS[i + 1]
  -- The counter is set to now and read in one call; set again only if it was not behind
  -- the clock (several events of a channel within a microsecond, or a clock that went back).
  local last = redis.call('SET', sk, nows, 'EX', ARGV[3], 'GET')
  local prev = last and tonumber(last) or 0
  local ps = last or '0'
  if floors then
    -- Behind what the caller gave it: a failover lost the channel's last events. Chain the
    -- next event to the lost one, so that readers who missed it are told.
    local floor = ARGV[floors + (i + 1) / 2]
    if tonumber(floor) > prev then prev, ps = tonumber(floor), floor end
  end
  local s, ss = now, nows
  if prev >= now then
    s = prev + 1
    ss = string.format('%d', s)
    redis.call('SET', sk, ss, 'EX', ARGV[3])
  end
  redis.call('ZADD', hk, ss, ss .. ' ' .. ps .. ' ' .. ARGV[7 + (i + 1) / 2])
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', expired)
  redis.call('ZREMRANGEBYRANK', hk, '0', keep)
  redis.call('EXPIRE', hk, ARGV[2])
  out[#out + 1] = s
  out[#out + 1] = prev
  links[#links + 1] = ss .. ',' .. ps
end
if extra >= 3 then
  local queue, armed, pending = KEYS[2 * n + 1], KEYS[2 * n + 2], KEYS[2 * n + 3]
  local head = 8 + n + (floors and n or 0)
  local body = {ARGV[head + 1]}
  for j = 1, n do
    body[2 * j] = links[j]
    body[2 * j + 1] = ARGV[head + 1 + j]
  end
  if redis.call('SET', armed, '1', 'NX', 'PX', ARGV[5]) then
    if ARGV[head] ~= '' then
      redis.call('LPUSH', queue, ARGV[head] .. table.concat(body) .. ARGV[head + n + 2])
    end
    out[#out + 1] = 1
  else
    redis.call('RPUSH', pending, table.concat(body))
    redis.call('EXPIRE', pending, ARGV[6])
    out[#out + 1] = 0
  end
end
if idem then
  local a = #ARGV
  if ARGV[a - 1] ~= '' then
    redis.call('HSET', idem, 'f', ARGV[a - 2], 'r', ARGV[a - 1])
  else
    redis.call('HSET', idem, 'f', ARGV[a - 2], 't', string.format('%d', now))
  end
  redis.call('PEXPIRE', idem, ARGV[a])
end
return out
"""


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    channel: str
    event: str
    data: Any
    exclude: str | None
    serial: int
    prev: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event read back from a channel's log."""

    serial: int
    prev: int
    event: str
    data: Any
    exclude: str | None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Logged events after a serial, oldest first, as the History API serves them.

    ``gap`` says whether the events right after ``after`` are all still there, decided as a
    resuming subscription's (gateway/protocol/resume.py): None when the first event of the
    page follows ``after`` directly (its ``prev`` is ``after``), or, on an empty page, when
    nothing followed ``after`` at all (the channel's serial is ``after``); ``"expired"`` when
    the chain went past ``after`` but its next events are gone from the log (retention or
    max_events); ``"reset"`` when the chain does not go through ``after`` at all (the log was
    lost, replaced or rolled back, or ``after`` was never a serial of this channel)."""

    events: list[LogEntry]
    serial: int  # the channel's position: its last event's serial (0: none known)
    has_more: bool
    gap: str | None

    @property
    def next(self) -> int:
        """The ``after`` of the following page: where a reader of this page stands."""
        return self.events[-1].serial if self.events else self.serial


def entry_json(event: str, data: Any, exclude: str | None) -> bytes:
    return orjson.dumps({"e": event, "d": data, "x": exclude})


def parse_member(member: bytes | str) -> LogEntry:
    raw = member.encode() if isinstance(member, str) else member
    serial_text, _, rest = raw.partition(b" ")
    serial = int(serial_text)
    if rest[:1] == b"{":  # written before chained serials: they counted up by one
        prev, entry = serial - 1, rest
    else:
        prev_text, _, entry = rest.partition(b" ")
        prev = int(prev_text)
    e = orjson.loads(entry)
    return LogEntry(serial, prev, e["e"], e.get("d"), e.get("x"))


def _serial(value: Any) -> int:
    return int(value) if value is not None else 0


class History:
    """Serials and logs over a synchronous or asyncio redis client (same methods)."""

    def __init__(self, redis: Any, keys: Keys, max_events: int, retention: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_events = max_events
        self.retention = retention
        self._accept = register_script(redis, ACCEPT_LUA)
        # The API's, on Sentinel: the serials it gave last (gateway/state/chain_heads.py).
        self.heads: Any = None

    def accept_args(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]],
        limits: HistorySettings | None = None,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV for ``events`` given as (channel, event, data, exclude), logged under
        ``limits`` (the app's, default: this History's)."""
        max_events, retention = (
            (limits.max_events, limits.retention) if limits else (self.max_events, self.retention))
        keys: list[str] = []
        floored = self.heads is not None and self.keys.cluster
        args: list[Any] = [max_events, retention, max(SERIAL_TTL, retention), len(events),
                           ARMED_MS, self.retention, "1" if floored else "0"]
        for channel, event, data, exclude in events:
            keys += [self.keys.serial(app_id, channel), self.keys.history(app_id, channel)]
            args.append(entry_json(event, data, exclude))
        if floored:
            args += self.heads.floors(keys[0::2])
        return keys, args

    def _run(
        self, keys: list[str], args: list[Any], claim: IdempotencyClaim | None
    ) -> list[Any] | SeenRequest:
        if claim is not None:
            keys.append(claim.key)
            args += claim.args()
        out = self._accept(keys=keys, args=args)
        if out and out[0] == SEEN:
            return SeenRequest.from_reply(out)
        if self.heads is not None:
            n = args[3]
            self.heads.note(keys[0:2 * n:2], [int(s) for s in out[0:2 * n:2]])
        return out  # type: ignore[no-any-return]

    def accept(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]],
        limits: HistorySettings | None = None, claim: IdempotencyClaim | None = None,
    ) -> list[AcceptedEvent] | SeenRequest:
        """Give each event its serial and append it to its channel's log (sync clients); with
        ``claim``, only if its idempotency key is not taken (else what it holds)."""
        out = self._run(*self.accept_args(app_id, events, limits), claim)
        if isinstance(out, SeenRequest):
            return out
        return [
            AcceptedEvent(channel, event, data, exclude, int(out[2 * i]), int(out[2 * i + 1]))
            for i, (channel, event, data, exclude) in enumerate(events)
        ]

    def accept_and_enqueue(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]],
        queue_key: str, head: bytes, body: Sequence[bytes], tail: bytes,
        limits: HistorySettings | None = None, claim: IdempotencyClaim | None = None,
    ) -> tuple[list[tuple[int, int]], bool] | SeenRequest:
        """``accept``, and in the same script either LPUSH the task message (``head``, the
        ``body`` pieces with each event's "serial,prev" between them, ``tail``) onto
        ``queue_key`` or, while an earlier task waits, append the body to ``lv:pending``.
        With an empty ``head`` nothing is pushed: the caller queues the task itself when one
        is needed (another broker, gateway/api/live_sender.py). Returns each event's (serial,
        prev) and whether the request needs (or got) a task of its own, or what ``claim``'s
        key holds."""
        keys, args = self.accept_args(app_id, events, limits)
        armed = self.keys.live_armed_of(app_id)
        # Without a head the queue is not written: the armed key stands in for it, so that on
        # Redis Cluster the script names only keys of the app's slot.
        keys += [queue_key if head else armed, armed, self.keys.live_pending_of(app_id)]
        args.append(head)
        args += body
        args.append(tail)
        out = self._run(keys, args, claim)
        if isinstance(out, SeenRequest):
            return out
        *links, queued = out
        return [(int(s), int(p)) for s, p in zip(links[::2], links[1::2], strict=True)], (
            queued == 1)

    def page(self, app_id: str, channel: str, after: int, limit: int) -> HistoryPage:
        """At most ``limit`` logged events with a serial above ``after``, and the channel's
        serial, read at one instant (MULTI): a sync client only (the API's)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.keys.serial(app_id, channel))
        pipe.zrangebyscore(self.keys.history(app_id, channel), f"({after}", "+inf",
                           start=0, num=limit + 1)
        current, members = pipe.execute()
        events = [parse_member(m) for m in members[:limit]]
        serial = _serial(current)
        return HistoryPage(events, serial, len(members) > limit, failure(after, serial, events))

    async def current_serial(self, app_id: str, channel: str) -> int:
        """The serial of the channel's last event (0: none, or its counter expired)."""
        return _serial(await self.redis.get(self.keys.serial(app_id, channel)))

    async def current_serials(
        self, channels: Sequence[tuple[str, str]], chunk: int = 500
    ) -> list[int]:
        """``current_serial`` of many (app, channel) pairs, one MGET per ``chunk``."""
        out: list[int] = []
        for i in range(0, len(channels), chunk):
            keys = [self.keys.serial(app, ch) for app, ch in channels[i : i + chunk]]
            # On Redis Cluster the apps' keys are in several slots: one MGET per slot.
            values = await (self.redis.mget_nonatomic(keys) if self.keys.cluster
                            else self.redis.mget(keys))
            out += [_serial(v) for v in values]
        return out

    async def since(
        self, app_id: str, channel: str, after: int, upto: int | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """Logged events with ``after < serial <= upto`` (or all after), oldest first, at
        most ``limit`` of them."""
        upper = str(upto) if upto is not None else "+inf"
        paging = {"start": 0, "num": limit} if limit is not None else {}
        members = await self.redis.zrangebyscore(
            self.keys.history(app_id, channel), f"({after}", upper, **paging
        )
        return [parse_member(m) for m in members]
