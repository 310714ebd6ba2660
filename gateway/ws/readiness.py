"""What the node's ``GET /ready`` answers: whether a balancer should send it clients.

Besides while it shuts down (gateway/ws/server.py), a node is not ready while Redis does not
answer, or while it is not subscribed to the bus (it would take subscriptions it cannot
deliver events to). A client already connected
keeps its connection either way: the node still answers pings and fills what it missed once
Redis is back; /ready only steers new clients to nodes that can serve them.

Redis is probed every ``interval`` seconds with a PING over a connection of the probe's own,
short timeouts and no retries, so neither a saturated command pool nor a hung server delays
the verdict, and ``/ready`` itself never waits on Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config.settings import RedisSettings
from gateway.state.redis_client import async_client

log = structlog.get_logger("clarion.ws.readiness")

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0


class Readiness:
    def __init__(self, redis: RedisSettings, bus_connected: Callable[[], bool],
                 interval: float = PROBE_INTERVAL) -> None:
        self.redis: Any = async_client(
            redis, "readiness", socket_connect_timeout=PROBE_TIMEOUT,
            socket_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 0),
        )
        self.bus_connected = bus_connected
        self.interval = interval
        self.redis_error: str | None = "Redis: not checked yet"
        self._failing = False

    def problem(self) -> str | None:
        """Why the node cannot serve new clients, or None when it can."""
        if self.redis_error is not None:
            return self.redis_error
        if not self.bus_connected():
            return "Redis: not subscribed to the event bus yet"
        return None

    async def probe(self) -> None:
        try:
            await self.redis.ping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:
                log.warning("not_ready", error=str(exc))
            self._failing = True
            self.redis_error = f"Redis: {exc or type(exc).__name__}"
            return
        if self._failing:
            log.info("ready_again")
        self._failing = False
        self.redis_error = None

    async def run(self, halted: Callable[[float], Any]) -> None:
        """Probe every ``interval`` until ``await halted(interval)`` says the node is stopping
        (the node makes the first probe itself as it starts)."""
        while not await halted(self.interval):
            await self.probe()

    async def close(self) -> None:
        await self.redis.aclose()
