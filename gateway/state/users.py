"""Who is signed in, cluster-wide: the source of watchlist ``online`` / ``offline`` events.

A user is online while at least one connection, on any node, is signed in as it
(``pusher:signin``). ``P uon:{app}`` counts those connections per user across the cluster;
each node also keeps its own share in ``P nu:{node}`` (``"{app}\\x1f{user}"`` -> count) so
that the survivor sweeping a dead node can take its connections away again (and announce the
users that thereby went offline), as presence does. ``P uso:{app}`` counts each user's
sign-outs (a connection closed or swept): unchanged between two reads, with the user online at
both, means a connection signed in at the first read was still signed in at the second (the
push worker's deliver-live-else-push relies on it, workers/push/live.py).
"""

from __future__ import annotations

from typing import Any

from gateway.state.keys import SEP, Keys
from gateway.state.redis_client import register_script
from gateway.state.registry import node_keys

# KEYS: users online, node rows, sign-outs. ARGV: user, row, delta (+1 / -1).
# Returns the user's new cluster-wide count (0: went offline, 1 after +1: came online).
CHANGE_LUA = """
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local delta = tonumber(ARGV[3])
if delta < 0 and mine <= 0 then return -1 end
mine = mine + delta
if mine > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], mine)
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
if delta < 0 then redis.call('HINCRBY', KEYS[3], ARGV[1], 1) end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]); return 0 end
return n
"""

# KEYS: node rows, and on Redis Cluster (rows of one app) that app's users online and
# sign-outs. ARGV: key prefix. Removes a (dead) node's sign-ins; returns the
# "{app}\x1f{user}" rows whose user thereby went offline.
SWEEP_LUA = """
local rows = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #rows, 2 do
  local row, count = rows[i], tonumber(rows[i + 1])
  local sep = string.find(row, '\\31', 1, true)
  local app, user = string.sub(row, 1, sep - 1), string.sub(row, sep + 1)
  local key = KEYS[2] or ARGV[1] .. 'uon:' .. app
  redis.call('HINCRBY', KEYS[3] or ARGV[1] .. 'uso:' .. app, user, 1)
  local n = redis.call('HINCRBY', key, user, -count)
  if n <= 0 then redis.call('HDEL', key, user); gone[#gone + 1] = row end
end
redis.call('DEL', KEYS[1])
return gone
"""


def user_row(app_id: str, user_id: str) -> str:
    return f"{app_id}{SEP}{user_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SignedInUsers:
    """Node side (asyncio client)."""

    def __init__(self, redis: Any, keys: Keys, node_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self._change = register_script(redis, CHANGE_LUA)
        self._sweep = register_script(redis, SWEEP_LUA)

    async def _apply(self, app_id: str, user_id: str, delta: int) -> int:
        return int(await self._change(
            keys=[self.keys.users_online(app_id), self.keys.node_users(self.node_id, app_id),
                  self.keys.users_signouts(app_id)],
            args=[user_id, user_row(app_id, user_id), delta],
        ))

    async def sign_in(self, app_id: str, user_id: str) -> bool:
        """Count one more connection of the user; True when the user just came online."""
        return await self._apply(app_id, user_id, 1) == 1

    async def sign_out(self, app_id: str, user_id: str) -> bool:
        """Count one connection less; True when that was the user's last one anywhere."""
        return await self._apply(app_id, user_id, -1) == 0

    async def online(self, app_id: str, user_ids: list[str]) -> list[str]:
        """The ones among ``user_ids`` signed in somewhere, in the given order."""
        if not user_ids:
            return []
        counts = await self.redis.hmget(self.keys.users_online(app_id), user_ids)
        return [u for u, n in zip(user_ids, counts, strict=True) if n is not None and int(n) > 0]

    async def has_rows(self) -> bool:
        if self.keys.cluster:
            return bool(await node_keys(self.redis, self.keys, self.keys.node_users,
                                        self.node_id))
        return bool(await self.redis.exists(self.keys.node_users(self.node_id)))

    async def sweep_node(self, node_id: str) -> list[tuple[str, str]]:
        """Remove ``node_id``'s sign-ins; (app, user) of the users that went offline."""
        out = []
        for key in await node_keys(self.redis, self.keys, self.keys.node_users, node_id):
            rows = await self._sweep(keys=self._sweep_keys(key), args=[self.keys.prefix])
            for row in rows:
                app_id, _, user_id = _text(row).partition(SEP)
                out.append((app_id, user_id))
        return out

    def _sweep_keys(self, rows_key: bytes | str) -> list[Any]:
        if not self.keys.cluster:
            return [rows_key]
        # nu:{app}:{node}: the app is the hash tag.
        text = _text(rows_key)
        app_id = text[text.index("{") + 1 : text.index("}")]
        return [rows_key, self.keys.users_online(app_id), self.keys.users_signouts(app_id)]
