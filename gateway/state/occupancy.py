"""Subscription counts: each node writes its own, readers add up the live nodes'.

A node owns ``P occ:{app}:{node}`` (channel -> local subscriptions) and is the only writer, so
no count can drift; a dead node's hash is ignored as soon as its heartbeat is stale and is
deleted by the survivor that sweeps it (registry.py).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from gateway.state.keys import Keys


class NodeOccupancy:
    """Write side, for one WebSocket node (asyncio client)."""

    def __init__(self, redis: Any, keys: Keys, node_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id

    async def set(self, app_id: str, channel: str, count: int) -> None:
        key = self.keys.occupancy(app_id, self.node_id)
        if count > 0:
            await self.redis.hset(key, channel, count)
        else:
            await self.redis.hdel(key, channel)


def live_nodes(redis: Any, keys: Keys, node_timeout: float, now: float | None = None) -> list[str]:
    """Nodes whose heartbeat is recent (synchronous client)."""
    now = time.time() if now is None else now
    oldest = int((now - node_timeout) * 1000)
    return [n.decode() if isinstance(n, bytes) else n
            for n in redis.zrangebyscore(keys.nodes, oldest, "+inf")]


def subscription_counts(
    redis: Any, keys: Keys, app_id: str, node_timeout: float
) -> Counter[str]:
    """Channel -> subscriptions across live nodes, for occupied channels only."""
    nodes = live_nodes(redis, keys, node_timeout)
    pipe = redis.pipeline(transaction=False)
    for node in nodes:
        pipe.hgetall(keys.occupancy(app_id, node))
    total: Counter[str] = Counter()
    for mapping in pipe.execute():
        for channel, count in mapping.items():
            name = channel.decode() if isinstance(channel, bytes) else channel
            total[name] += int(count)
    return +total  # drops zero or negative entries


def subscription_count(
    redis: Any, keys: Keys, app_id: str, channel: str, node_timeout: float
) -> int:
    nodes = live_nodes(redis, keys, node_timeout)
    if not nodes:
        return 0
    pipe = redis.pipeline(transaction=False)
    for node in nodes:
        pipe.hget(keys.occupancy(app_id, node), channel)
    return sum(int(v) for v in pipe.execute() if v is not None)
