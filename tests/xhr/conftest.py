"""pusher-js's HTTP transports (xhr_streaming, xhr_polling) against real deployments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _harness import Cluster
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import start_cluster, stop_cluster

from tests.xhr.xhr_harness import PusherJsHttp, install_pusher_js

# Short enough for the tests to watch liveness at work: heartbeats every 2 s, a silent client
# closed 2 + 1 s after its last sign of life, a session without a request reaped after 2 s.
LIVENESS = {"activity_timeout": 2, "pong_timeout": 1.0, "http_session_timeout": 2.0}


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return install_pusher_js()


@pytest.fixture(scope="module")
def cluster(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("xhr"), nodes=1, workers=1,
                      websocket=LIVENESS)
    yield c
    stop_cluster(c)


@pytest.fixture
def sdk(cluster: Cluster):
    return cluster.pusher()


@pytest.fixture
def js_factory(node_modules: Path) -> Iterator[Callable[..., PusherJsHttp]]:
    """``make(port, user_id, transport)``: a pusher-js client, not yet waited for."""
    started: list[PusherJsHttp] = []

    def make(port: int, user_id: str, transport: str) -> PusherJsHttp:
        client = PusherJsHttp(node_modules, port, user_id, transport)
        started.append(client)
        return client

    yield make
    for client in started:
        client.close()
