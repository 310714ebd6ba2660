"""Compatibility suite: the official ``pusher`` SDK, pysher and a pusher-js-shaped client
against one real deployment (1 WebSocket node, 1 worker, the API)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _harness import Cluster
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import start_cluster, stop_cluster


@pytest.fixture(scope="module")
def cluster(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("compat"), nodes=1, workers=1)
    yield c
    stop_cluster(c)


@pytest.fixture
def sdk(cluster: Cluster):
    return cluster.pusher()
