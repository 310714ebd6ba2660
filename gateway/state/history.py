"""Per-channel serials and recent-event history.

The API accepts events through ``accept_and_enqueue`` (one Lua script, atomic for the whole
request): each event gets the next serial of its channel and is appended to the channel's
history, and the request's delivery task is pushed onto the Celery queue (its message written
by gateway/api/deliver_message.py, the serials filled in by the script), so accepting and
enqueueing cost one round trip and never happen one without the other. ``accept`` does the
first part alone. Nodes read
``since`` to fill a gap in the serials they have seen, so events on one channel reach
subscribers in the order they were accepted whichever worker delivered them first.

History members are ``"<serial> <entry JSON>"`` so equal entries stay distinct; the entry is
``{"e": event, "d": data, "x": excluded socket id}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.state.keys import Keys

# KEYS: serial key and history key of each event, in pairs; optionally then the queue key, the
# armed key and the pending key (gateway/state/keys.py, lv:*).
# ARGV: history size, ttl seconds, n (events), armed ms, one entry JSON per event, then (with
# the queue key) the task message's head, its n + 1 body pieces between which the n serials
# go, and its tail (gateway/api/deliver_message.py).
#
# The task is enqueued only if no earlier one is waiting (SET NX on the armed key, which the
# task deletes when it drains): otherwise the body joins the pending list that task drains. So
# under load many requests share one task, and at a trickle each request has its own. The
# armed key expires after "armed ms" so that a task lost with a killed worker cannot keep
# later requests from queueing theirs.
# How long a queued task keeps later requests riding on it: well above the queue's normal wait,
# short enough that a task lost with its worker holds nothing up for long.
ARMED_MS = 5000

ACCEPT_LUA = """
local size = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
local now = nil
for i = 1, 2 * n, 2 do
  local sk, hk = KEYS[i], KEYS[i + 1]
  local s = redis.call('INCR', sk)
  if s == 1 then
    -- A new counter starts at the server time in microseconds (see keys.py).
    if now == nil then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    s = now + 1
    redis.call('SET', sk, string.format('%d', s))
  end
  redis.call('EXPIRE', sk, ttl)
  redis.call('ZADD', hk, s, string.format('%d', s) .. ' ' .. ARGV[4 + (i + 1) / 2])
  redis.call('ZREMRANGEBYRANK', hk, 0, -(size + 1))
  redis.call('EXPIRE', hk, ttl)
  out[#out + 1] = s
end
if #KEYS > 2 * n then
  local queue, armed, pending = KEYS[2 * n + 1], KEYS[2 * n + 2], KEYS[2 * n + 3]
  local head = 5 + n
  local body = {ARGV[head + 1]}
  for j = 1, n do
    body[2 * j] = string.format('%d', out[j])
    body[2 * j + 1] = ARGV[head + 1 + j]
  end
  if redis.call('SET', armed, '1', 'NX', 'PX', ARGV[4]) then
    redis.call('LPUSH', queue, ARGV[head] .. table.concat(body) .. ARGV[head + n + 2])
    out[n + 1] = 1
  else
    redis.call('RPUSH', pending, table.concat(body))
    redis.call('EXPIRE', pending, ttl)
    out[n + 1] = 0
  end
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


def entry_json(event: str, data: Any, exclude: str | None) -> bytes:
    return orjson.dumps({"e": event, "d": data, "x": exclude})


def parse_member(member: bytes | str) -> tuple[int, dict[str, Any]]:
    raw = member.encode() if isinstance(member, str) else member
    serial, _, entry = raw.partition(b" ")
    return int(serial), orjson.loads(entry)


class History:
    """Serials and history over a synchronous or asyncio redis client (same methods)."""

    def __init__(self, redis: Any, keys: Keys, size: int, ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.size = size
        self.ttl = ttl
        self._accept = redis.register_script(ACCEPT_LUA)

    def accept_args(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]]
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV for ``events`` given as (channel, event, data, exclude)."""
        keys: list[str] = []
        args: list[Any] = [self.size, self.ttl, len(events), ARMED_MS]
        for channel, event, data, exclude in events:
            keys += [self.keys.serial(app_id, channel), self.keys.history(app_id, channel)]
            args.append(entry_json(event, data, exclude))
        return keys, args

    def accept(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]]
    ) -> list[AcceptedEvent]:
        """Give each event its channel serial and append it to history (sync clients)."""
        keys, args = self.accept_args(app_id, events)
        serials = self._accept(keys=keys, args=args)
        return [
            AcceptedEvent(channel, event, data, exclude, int(serial))
            for (channel, event, data, exclude), serial in zip(events, serials, strict=True)
        ]

    def accept_and_enqueue(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]],
        queue_key: str, head: bytes, body: Sequence[bytes], tail: bytes,
    ) -> tuple[list[int], bool]:
        """``accept``, and in the same script either LPUSH the task message (``head``, the
        ``body`` pieces with the serials between them, ``tail``) onto ``queue_key`` or, while
        an earlier task waits, append the body to ``lv:pending``. Returns the serials and
        whether a task was queued."""
        keys, args = self.accept_args(app_id, events)
        keys += [queue_key, self.keys.live_armed, self.keys.live_pending]
        args.append(head)
        args += body
        args.append(tail)
        *serials, queued = self._accept(keys=keys, args=args)
        return [int(s) for s in serials], queued == 1

    async def current_serial(self, app_id: str, channel: str) -> int:
        value = await self.redis.get(self.keys.serial(app_id, channel))
        return int(value) if value is not None else 0

    async def current_serials(
        self, channels: Sequence[tuple[str, str]], chunk: int = 500
    ) -> list[int]:
        """``current_serial`` of many (app, channel) pairs, one MGET per ``chunk``."""
        out: list[int] = []
        for i in range(0, len(channels), chunk):
            keys = [self.keys.serial(app, ch) for app, ch in channels[i : i + chunk]]
            out += [int(v) if v is not None else 0 for v in await self.redis.mget(keys)]
        return out

    async def since(
        self, app_id: str, channel: str, after: int, before: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """Events with ``after < serial < before`` (or all after), oldest first."""
        upper = f"({before}" if before is not None else "+inf"
        members = await self.redis.zrangebyscore(
            self.keys.history(app_id, channel), f"({after}", upper
        )
        return [parse_member(m) for m in members]
