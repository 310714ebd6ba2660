"""Node registry: heartbeats, and survivors cleaning up after a node that died.

Every node writes ``P nodes`` (node id -> unix ms) each heartbeat. A node whose entry is older
than ``node_timeout`` is dead: the first survivor to take its sweep lock removes its presence
rows (publishing ``member_removed`` for users who had no other connection), deletes its
occupancy hashes and its registry entry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.state.keys import Keys, split_presence_row
from gateway.state.presence import Presence

# Called for each user that left a presence channel because its node died.
OnMemberRemoved = Callable[[str, str, str], Awaitable[None]]


class Registry:
    def __init__(self, redis: Any, keys: Keys, node_id: str, node_timeout: float) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self.node_timeout = node_timeout

    async def heartbeat(self) -> None:
        await self.redis.zadd(self.keys.nodes, {self.node_id: int(time.time() * 1000)})

    async def deregister(self) -> None:
        await self.redis.zrem(self.keys.nodes, self.node_id)
        await self._delete_node_keys(self.node_id)

    async def dead_nodes(self) -> list[str]:
        oldest = int((time.time() - self.node_timeout) * 1000)
        raw = await self.redis.zrangebyscore(self.keys.nodes, "-inf", f"({oldest}")
        return [n.decode() if isinstance(n, bytes) else n for n in raw]

    async def sweep(
        self, presence: Presence, on_member_removed: OnMemberRemoved,
        on_node_dead: Callable[[str], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Clean up every dead node this node wins the lock for; return their ids.
        ``on_node_dead(node)`` cleans up the rest of its state (connection counts, sign-ins)."""
        swept = []
        for node in await self.dead_nodes():
            if node == self.node_id:
                continue
            if not await self.redis.set(self.keys.sweep_lock(node), self.node_id, nx=True, ex=30):
                continue
            await self._sweep_presence(node, presence, on_member_removed)
            if on_node_dead is not None:
                await on_node_dead(node)
            await self._delete_node_keys(node)
            await self.redis.zrem(self.keys.nodes, node)
            swept.append(node)
        return swept

    async def _sweep_presence(
        self, node: str, presence: Presence, on_member_removed: OnMemberRemoved
    ) -> None:
        for key in await node_keys(self.redis, self.keys, self.keys.node_presence, node):
            for row in await self.redis.smembers(key):
                text = row.decode() if isinstance(row, bytes) else row
                app_id, channel, socket_id = split_presence_row(text)
                user_id = await presence.leave(app_id, channel, socket_id, node_id=node)
                if user_id is not None:
                    await on_member_removed(app_id, channel, user_id)

    async def _delete_node_keys(self, node: str) -> None:
        doomed = await node_keys(self.redis, self.keys, self.keys.node_presence, node)
        async for key in self.redis.scan_iter(match=self.keys.occupancy_pattern(node)):
            doomed.append(key)
        await self.redis.delete(*doomed)


async def node_keys(
    redis: Any, keys: Keys, key_of: Callable[[str, str], str], node: str
) -> list[Any]:
    """A node's keys of one kind (``key_of(node, app)``): the one key, or on Redis Cluster
    its key in each app's slot, found by SCAN over every master (only when a node is swept
    or leaves)."""
    if not keys.cluster:
        return [key_of(node, "")]
    return [key async for key in redis.scan_iter(match=key_of(node, "*"))]
