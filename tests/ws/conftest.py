"""Fixtures for the WebSocket node tests (helpers live in ws_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from ws_harness import Bus, NodeThread, PusherClient, make_settings


@pytest.fixture
def start_node(redis_url: str, key_prefix: str) -> Iterator[Callable[..., NodeThread]]:
    nodes: list[NodeThread] = []

    def start(**ws: Any) -> NodeThread:
        node = NodeThread(make_settings(redis_url, key_prefix, **ws)).start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(start_node: Callable[..., NodeThread]) -> NodeThread:
    return start_node()


@pytest.fixture
def client(node: NodeThread) -> Iterator[Callable[..., PusherClient]]:
    """Factory of connected clients (connection_established already read)."""
    opened: list[PusherClient] = []

    def open_client(**kw: Any) -> PusherClient:
        c = PusherClient(node.url, **kw)
        c.established()
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


@pytest.fixture
def bus(redis_client: redis.Redis, key_prefix: str) -> Bus:
    return Bus(redis_client, key_prefix)


