"""Compatibility suite: the official ``pusher`` SDK, pysher and a pusher-js-shaped client
against one real deployment (1 WebSocket node, 1 worker, the API), with its state on one
Redis and again on a Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _harness import Cluster
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import STATE_REDIS, start_cluster, state_redis_sections, stop_cluster


@pytest.fixture(scope="module", params=STATE_REDIS)
def cluster(request: pytest.FixtureRequest, redis_server,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("compat"), nodes=1, workers=1,
                      **state_redis_sections(request, redis_server.url))
    yield c
    stop_cluster(c)


@pytest.fixture
def sdk(cluster: Cluster):
    return cluster.pusher()
