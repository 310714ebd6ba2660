"""Channels, complete (issue 3): one deployment shared by the suite (cc_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
from _harness.fixtures import start_cluster, stop_cluster
from cc_harness import APPS, CACHE_TTL, Deployment, app_key, app_secret


@pytest.fixture(scope="package")
def deployment(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    apps = [{"id": i, "key": app_key(i), "secret": app_secret(i), **extra}
            for i, extra in APPS.items()]
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("cc"), nodes=2, workers=1,
                      apps=apps, cache={"ttl": CACHE_TTL})
    yield Deployment(c)
    stop_cluster(c)


@pytest.fixture
def dep(deployment: Deployment) -> Deployment:
    return deployment
