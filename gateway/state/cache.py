"""The last event of each cache channel (``cache-``, ``private-cache-``,
``private-encrypted-cache-``, ``presence-cache-``), kept for ``settings.cache.ttl`` seconds.

Written by the ``live`` worker for events published over the REST API (never for client
events), in the same pipeline that publishes them, by a script that compares serials: a
redelivered or late task can never replace a newer event with an older one. Read by the
WebSocket node when a connection subscribes (replay or ``pusher:cache_miss``) and by the API
(``GET /apps/{id}/channels/{name}?info=cache``).

``P cache:{app}:{channel}`` is a hash: ``s`` serial, ``e`` event name, ``d`` data string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# KEYS: cache key. ARGV: serial, event, data, ttl seconds. Returns 1 if stored, 0 if older.
STORE_LUA = """
local current = redis.call('HGET', KEYS[1], 's')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'e', ARGV[2], 'd', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


@dataclass(frozen=True, slots=True)
class CachedEvent:
    serial: int
    event: str
    data: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(raw: Any) -> CachedEvent | None:
    if not raw:
        return None
    fields = {_text(k): v for k, v in raw.items()}
    if "s" not in fields or "e" not in fields:
        return None
    return CachedEvent(int(fields["s"]), _text(fields["e"]), _text(fields.get("d", b"")))


class ChannelCache:
    """Over a synchronous (worker, API) or asyncio (node) redis client; same key schema."""

    def __init__(self, redis: Any, keys: Keys, ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self._store = register_script(redis, STORE_LUA)

    def store_in(self, pipe: Any, app_id: str, channel: str, serial: int, event: str,
                 data: Any) -> None:
        """Queue the compare-and-store on a (sync) pipeline, next to the bus publish."""
        text = data if isinstance(data, str) else ("" if data is None else str(data))
        key = self.keys.cache(app_id, channel)
        if self.keys.cluster:
            # A cluster pipeline does not load scripts: EVAL carries it to whichever master.
            pipe.execute_command("EVAL", STORE_LUA, 1, key, serial, event, text, self.ttl)
            return
        self._store(keys=[key], args=[serial, event, text, self.ttl], client=pipe)

    async def get(self, app_id: str, channel: str) -> CachedEvent | None:
        """Node side (asyncio client)."""
        return _parse(await self.redis.hgetall(self.keys.cache(app_id, channel)))

    def info(self, app_id: str, channel: str) -> dict[str, Any] | None:
        """API side (sync client): ``{"data", "ttl"}`` as Pusher's ``info=cache``, or None."""
        key = self.keys.cache(app_id, channel)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.ttl(key)
        raw, ttl = pipe.execute()
        cached = _parse(raw)
        if cached is None:
            return None
        return {"data": cached.data, "ttl": max(int(ttl), 0)}
