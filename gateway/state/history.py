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

# KEYS: serial key and history key of each event, in pairs; optionally the queue key last.
# ARGV: history size, ttl seconds, one entry JSON per event, then (with a queue key) the
# n + 1 pieces of the task message, between which the n serials go (gateway/api/deliver_message.py).
ACCEPT_LUA = """
local size = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = math.floor(#KEYS / 2)
local out = {}
local now = nil
for i = 1, 2 * n, 2 do
  local sk, hk = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', sk) == 0 then
    if now == nil then
      local t = redis.call('TIME')
      now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    redis.call('SET', sk, now)
  end
  local s = redis.call('INCR', sk)
  redis.call('EXPIRE', sk, ttl)
  redis.call('ZADD', hk, s, string.format('%d', s) .. ' ' .. ARGV[2 + (i + 1) / 2])
  redis.call('ZREMRANGEBYRANK', hk, 0, -(size + 1))
  redis.call('EXPIRE', hk, ttl)
  out[#out + 1] = s
end
if #KEYS > 2 * n then
  local msg = {ARGV[3 + n]}
  for j = 1, n do
    msg[2 * j] = string.format('%d', out[j])
    msg[2 * j + 1] = ARGV[3 + n + j]
  end
  redis.call('LPUSH', KEYS[#KEYS], table.concat(msg))
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
        args: list[Any] = [self.size, self.ttl]
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
        queue_key: str, pieces: Sequence[bytes],
    ) -> list[int]:
        """``accept``, and in the same script LPUSH the task message made of ``pieces`` with
        the serials between them onto ``queue_key``. Returns the serials."""
        keys, args = self.accept_args(app_id, events)
        keys.append(queue_key)
        args += pieces
        return [int(s) for s in self._accept(keys=keys, args=args)]

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
