"""Fixtures for the webhook tests: a loopback receiver, webhooks worker subprocesses,
Reporters on an asyncio Redis client (one per simulated WebSocket node)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from config.settings import Settings
from gateway.state.keys import Keys
from gateway.webhooks.reporter import Reporter
from tests.webhooks.harness import Receiver, WebhookWorker


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    started: list[WebhookWorker] = []

    def start(settings: Settings, concurrency: int = 2, wait: bool = True,
              pool: str = "prefork") -> WebhookWorker:
        w = WebhookWorker(settings, tmp_path / f"worker{len(started)}.log", concurrency, pool)
        started.append(w)
        if wait:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()


class Nodes:
    """Reporters standing for WebSocket nodes, each heartbeating in ``P nodes``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis.key_prefix)
        self.sync = redis.Redis.from_url(settings.redis.url)
        self.aredis = redis.asyncio.Redis.from_url(settings.redis.url)
        self.reporters: dict[str, Reporter] = {}

    def node(self, node_id: str) -> Reporter:
        if node_id not in self.reporters:
            self.heartbeat(node_id)
            self.reporters[node_id] = Reporter(self.aredis, self.keys, self.settings, node_id)
        return self.reporters[node_id]

    def heartbeat(self, node_id: str, at_ms: int | None = None) -> None:
        import time

        self.sync.zadd(self.keys.nodes, {node_id: at_ms or int(time.time() * 1000)})

    async def flush(self) -> None:
        for r in self.reporters.values():
            await r.flush(5)

    async def close(self) -> None:
        for r in self.reporters.values():
            await r.close()
        await self.aredis.aclose()
        self.sync.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()
