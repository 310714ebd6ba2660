"""Connection continuity (docs/resume.md): real pusher-js 8 and Laravel Echo 2 clients with
Clarion's resume extension (clients/js) against real nodes, workers, API and Redis, their
connections cut by a TCP proxy (tests/_harness/proxy.py) or their node killed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import Cluster
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import start_cluster, stop_cluster
from _harness.proxy import Proxy

from tests.continuity.continuity_harness import Fleet, install_node_modules


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return install_node_modules()


@pytest.fixture(scope="module")
def cluster(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One node, two workers: the deployment the single-node tests share (each on channels
    of its own)."""
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("continuity"), nodes=1,
                      workers=2)
    yield c
    stop_cluster(c)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(upstreams: list[int], **kwargs: Any) -> Proxy:
        proxy = Proxy(upstreams, **kwargs).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
def fleet_factory(node_modules: Path) -> Iterator[Callable[..., Fleet]]:
    """``make(ws_port, count, resume=..., flavor=..., users=...)``: Node processes of
    pusher-js clients, quit when the test ends."""
    made: list[Fleet] = []

    def make(ws_port: int, count: int = 1, **kwargs: Any) -> Fleet:
        fleet = Fleet(node_modules, ws_port, count, **kwargs)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()
