"""Shared fixtures: a real redis-server on a free port, from the binary `clarion up` uses."""

from __future__ import annotations

import pytest
import redis
from _harness.redis_binary import redis_binary

from gateway.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One redis-server for the whole session; tests isolate themselves by key prefix."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), binary=redis_binary()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix unique to the test, so tests sharing the server never see each other's keys."""
    return f"t{abs(hash(request.node.nodeid)) % 10**8}:"
