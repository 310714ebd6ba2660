"""The dashboard suite: one deployment (API, node, workers, Redis: real processes) with the
dashboard on, and a webhook receiver on loopback whose answers the tests decide."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _harness import Cluster
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import start_cluster, stop_cluster

from tests.continuity.continuity_harness import install_node_modules
from tests.webhooks.harness import Receiver

TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def cluster(redis_server, receiver: Receiver,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Webhooks of channel_occupied to the receiver, retried once after 0.5 s: a failing
    answer makes a failed delivery, two make a dead one."""
    c = start_cluster(
        redis_server.url, tmp_path_factory.mktemp("dashboard"), nodes=1, workers=1,
        app={"webhooks": [{"url": receiver.url(), "events": ["channel_occupied"]}]},
        dashboard={"admin_token": TOKEN},
        webhooks={"allowed_networks": ["127.0.0.0/8"], "retry_schedule": [0.5], "jitter": 0,
                  "batch_window": 0.05, "tick": 0.1},
    )
    yield c
    stop_cluster(c)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return install_node_modules()


def signed_in(cluster: Cluster) -> tuple[requests.Session, str]:
    """A requests session signed in to the dashboard, and its CSRF token."""
    s = requests.Session()
    r = s.post(f"{cluster.api_url}/dashboard/api/signin", json={"token": TOKEN}, timeout=10)
    assert r.status_code == 200, r.text
    return s, r.json()["csrf"]
