"""Cluster-wide presence, counted by user id across tabs and nodes.

A user is a member of a presence channel while at least one of its connections, on any node,
is subscribed. ``join`` says whether the user is new (send ``member_added``), ``leave`` whether
it left for good (send ``member_removed``). Each node also records its rows in ``P np:{node}``
so that a surviving node can remove the members of a node that died (see registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.state.keys import Keys, presence_row
from gateway.state.redis_client import register_script

# KEYS: members, counts, sockets, node rows. ARGV: socket, user, user_info JSON, row, max.
# Returns {status, members as a flat HGETALL list}; status 1 = new member, 0 = already a
# member (another tab, or a repeated subscribe), -1 = channel full.
JOIN_LUA = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local is_new = redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0
if is_new and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return {-1, {}}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if is_new then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
redis.call('SADD', KEYS[4], ARGV[4])
if is_new then return {1, redis.call('HGETALL', KEYS[1])} end
return {0, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: members, counts, sockets, node rows. ARGV: socket, row.
# Returns the user id when its last connection left, else nil.
LEAVE_LUA = """
redis.call('SREM', KEYS[4], ARGV[2])
local uid = redis.call('HGET', KEYS[3], ARGV[1])
if not uid then return false end
redis.call('HDEL', KEYS[3], ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], uid, -1)
if n > 0 then return false end
redis.call('HDEL', KEYS[2], uid)
redis.call('HDEL', KEYS[1], uid)
return uid
"""

NEW_MEMBER, EXISTING_MEMBER, CHANNEL_FULL = 1, 0, -1


@dataclass(frozen=True, slots=True)
class JoinResult:
    status: int
    members: dict[str, Any]

    @property
    def is_new(self) -> bool:
        return self.status == NEW_MEMBER

    @property
    def full(self) -> bool:
        return self.status == CHANNEL_FULL


def _members(flat: list[Any]) -> dict[str, Any]:
    it = iter(flat)
    return {_text(uid): orjson.loads(info) for uid, info in zip(it, it, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Presence:
    """Write side, for WebSocket nodes (asyncio redis client)."""

    def __init__(self, redis: Any, keys: Keys, node_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self._join = register_script(redis, JOIN_LUA)
        self._leave = register_script(redis, LEAVE_LUA)

    def _keys(self, app_id: str, channel: str, node_id: str) -> list[str]:
        k = self.keys
        return [
            k.presence_members(app_id, channel),
            k.presence_counts(app_id, channel),
            k.presence_sockets(app_id, channel),
            k.node_presence(node_id, app_id),
        ]

    async def join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any,
        max_members: int,
    ) -> JoinResult:
        row = presence_row(app_id, channel, socket_id)
        status, flat = await self._join(
            keys=self._keys(app_id, channel, self.node_id),
            args=[socket_id, user_id, orjson.dumps(user_info), row, max_members],
        )
        return JoinResult(int(status), _members(flat))

    async def leave(
        self, app_id: str, channel: str, socket_id: str, node_id: str | None = None
    ) -> str | None:
        """Remove one connection; the user id if that was the user's last one."""
        node = node_id or self.node_id
        uid = await self._leave(
            keys=self._keys(app_id, channel, node),
            args=[socket_id, presence_row(app_id, channel, socket_id)],
        )
        return _text(uid) if uid else None


def user_count(redis: Any, keys: Keys, app_id: str, channel: str) -> int:
    """Read side, for the API (synchronous client)."""
    return int(redis.hlen(keys.presence_members(app_id, channel)))


def user_ids(redis: Any, keys: Keys, app_id: str, channel: str) -> list[str]:
    return sorted(_text(u) for u in redis.hkeys(keys.presence_members(app_id, channel)))
