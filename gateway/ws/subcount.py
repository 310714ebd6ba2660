"""``pusher_internal:subscription_count`` for apps with ``subscription_count = true``.

When this node has written a changed local count of a channel (gateway/ws/occupancy.py), it
adds up the live nodes' counts and publishes ``{"subscription_count": N}`` on the bus as a
serial-less event of the channel, so every node hands it to its own subscribers. Not for
presence channels (they have member events) nor ``#server-to-user-`` ones.

Channels with more than ``BIG_CHANNEL`` subscribers get at most one count every
``BIG_CHANNEL_INTERVAL`` seconds, cluster-wide: the node that publishes takes the slot
``P sct:{app}:{channel}`` (SET NX PX); a node that finds it taken looks again when it
expires, so the last count is always sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from gateway.protocol.names import ChannelKind, channel_kind
from gateway.state.bus import BusEvent
from gateway.state.keys import Keys
from gateway.ws.background import WakeLoop

log = structlog.get_logger("clarion.ws.subcount")

EVENT = "pusher_internal:subscription_count"
BIG_CHANNEL = 100
BIG_CHANNEL_INTERVAL = 5.0


def counted(channel: str) -> bool:
    return channel_kind(channel) not in (ChannelKind.PRESENCE, ChannelKind.USER)


def count_data(n: int) -> str:
    return orjson.dumps({"subscription_count": n}).decode()


class SubscriptionCounter(WakeLoop):
    def __init__(
        self, redis: Any, keys: Keys, node_timeout: float,
        enabled: Callable[[str], bool], publish: Callable[[BusEvent], None],
    ) -> None:
        super().__init__()
        self.redis = redis
        self.keys = keys
        self.node_timeout = node_timeout
        self.enabled = enabled  # app id -> whether the app wants counts
        self.publish = publish
        self._pending: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def written(self, channels: list[tuple[str, str]]) -> None:
        """Called by the occupancy writer after it wrote these channels' local counts."""
        for app_id, channel in channels:
            if counted(channel) and self.enabled(app_id):
                self._pending.add((app_id, channel))
        if self._pending:
            self._wake.set()

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        super().stop()

    async def round(self) -> None:
        pending, self._pending = self._pending, set()
        for app_id, channel in sorted(pending):
            try:
                await self._count(app_id, channel)
            except Exception as exc:  # Redis down: counts resume with the next change
                log.warning("subscription_count_failed", error=str(exc))

    async def cluster_count(self, app_id: str, channel: str) -> int:
        oldest = int((time.time() - self.node_timeout) * 1000)
        nodes = await self.redis.zrangebyscore(self.keys.nodes, oldest, "+inf")
        if not nodes:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            node_id = node.decode() if isinstance(node, bytes) else node
            pipe.hget(self.keys.occupancy(app_id, node_id), channel)
        return sum(int(v) for v in await pipe.execute() if v is not None)

    async def _count(self, app_id: str, channel: str) -> None:
        n = await self.cluster_count(app_id, channel)
        if n <= 0:
            return
        if n > BIG_CHANNEL:
            slot = self.keys.subscription_count_slot(app_id, channel)
            interval_ms = int(BIG_CHANNEL_INTERVAL * 1000)
            if not await self.redis.set(slot, "1", nx=True, px=interval_ms):
                left = await self.redis.pttl(slot)
                self._later((app_id, channel), max(left, 10) / 1000)
                return
        self.publish(BusEvent(app_id, channel, EVENT, count_data(n)))

    def _later(self, key: tuple[str, str], delay: float) -> None:
        if key in self._timers:
            return

        def fire() -> None:
            self._timers.pop(key, None)
            if not self._stopped:
                self._pending.add(key)
                self._wake.set()

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)
