"""Connections per app, cluster-wide: the ``max_connections`` quota (4004 when full).

Each node owns one field of ``P conn:{app}`` (node id -> its connections of the app) and is
its only writer; a node's fields are listed in ``P nconn:{node}`` so that the survivor that
sweeps a dead node (or the node itself on shutdown) removes them. A count is the sum over
*live* nodes (heartbeat in ``P nodes`` newer than ``node_timeout``), so a dead node's
connections stop counting as soon as it is declared dead, even before the sweep.

Admission for an app with a quota is one script: sum the live nodes' fields, and if there is
room, write this node's new count (its admitted connections, those being admitted, plus the
new one). Apps without a quota are only counted, in the background (no round trip).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# KEYS: conn:{app}. ARGV: node id, this node's count with the new connection, max, then the
# live nodes (heartbeat newer than node_timeout). Returns 1 (admitted, count written) or 0
# (full). The live nodes are read before, apart: on Redis Cluster ``nodes`` is in another
# slot, and a heartbeat read a moment early decides nothing the script could do better.
ADMIT_LUA = """
local flat = redis.call('HGETALL', KEYS[1])
local total = tonumber(ARGV[2])
local live = {}
for i = 4, #ARGV do live[ARGV[i]] = true end
for i = 1, #flat, 2 do
  if flat[i] ~= ARGV[1] and live[flat[i]] then total = total + tonumber(flat[i + 1]) end
end
if total > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class ConnectionCounts:
    """Node side (asyncio client)."""

    def __init__(self, redis: Any, keys: Keys, node_id: str, node_timeout: float) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self.node_timeout = node_timeout
        self._admit = register_script(redis, ADMIT_LUA)

    def _oldest(self) -> int:
        return int((time.time() - self.node_timeout) * 1000)

    async def admit(self, app_id: str, count_with_new: int, max_connections: int) -> bool:
        # The node's field is listed first: a field written then is always found by a sweep.
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(self.keys.node_connections(self.node_id), app_id)
        pipe.zrangebyscore(self.keys.nodes, self._oldest(), "+inf")
        _, live = await pipe.execute()
        return bool(await self._admit(
            keys=[self.keys.connections(app_id)],
            args=[self.node_id, count_with_new, max_connections, *live],
        ))

    async def set(self, app_id: str, count: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if count > 0:
            pipe.hset(self.keys.connections(app_id), self.node_id, count)
            pipe.sadd(self.keys.node_connections(self.node_id), app_id)
        else:
            pipe.hdel(self.keys.connections(app_id), self.node_id)
        await pipe.execute()

    async def sweep_node(self, node_id: str) -> None:
        """Remove ``node_id``'s fields (a dead node, or this one on shutdown)."""
        rows = self.keys.node_connections(node_id)
        apps = await self.redis.smembers(rows)
        pipe = self.redis.pipeline(transaction=False)
        for app in apps:
            app_id = app.decode() if isinstance(app, bytes) else app
            pipe.hdel(self.keys.connections(app_id), node_id)
        pipe.delete(rows)
        await pipe.execute()


def cluster_connections(redis: Any, keys: Keys, app_id: str, node_timeout: float) -> int:
    """Read side (sync client): the app's connections on live nodes."""
    from gateway.state.occupancy import live_nodes

    nodes = live_nodes(redis, keys, node_timeout)
    if not nodes:
        return 0
    values = redis.hmget(keys.connections(app_id), nodes)
    return sum(int(v) for v in values if v is not None)
