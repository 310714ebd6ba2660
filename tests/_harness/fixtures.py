"""Pytest fixtures and hooks for suites that run whole deployments (tests/compat, tests/e2e).

Import them into a conftest with ``from _harness.fixtures import *``. When a test fails, the log
tails of every deployment still running are added to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from _harness.cluster import Cluster
from _harness.rabbitmq import INSTALL_HINT, RabbitMQ, rabbitmq_scripts
from _harness.redis_binary import redis_binary
from _harness.redis_cluster import RedisCluster
from _harness.sentinel import SentinelGroup
from gateway.embedded_redis import EmbeddedRedis
from gateway.processes import ChildDied

_ACTIVE: list[Cluster] = []

__all__ = [
    "cluster_factory", "dedicated_rabbitmq", "dedicated_redis", "pytest_runtest_makereport",
    "rabbitmq_server", "rabbitmq_url", "redis_cluster", "sentinel_group", "shared_redis_cluster",
    "start_cluster", "STATE_REDIS",
]

# Parameters of a deployment fixture that runs its suite on both kinds of state Redis.
STATE_REDIS = ["redis", "redis-cluster"]


def state_redis_sections(request: pytest.FixtureRequest, broker_url: str) -> dict[str, Any]:
    """Settings sections for ``request.param`` of STATE_REDIS: none (the suite's Redis), or
    the state on the shared Redis Cluster with ``broker_url`` as the Celery broker."""
    if request.param != "redis-cluster":
        return {}
    cluster = request.getfixturevalue("shared_redis_cluster")
    return {"redis": {"url": cluster.url, "cluster": True}, "broker": {"url": broker_url}}


# A free port can be taken by someone else before the process it was chosen for binds it (the
# kernel hands ports out in sequence): the deployment is then started again on other ports.
PORT_ATTEMPTS = 3


def start_cluster(redis_url: str, tmp_dir: Any, **kwargs: Any) -> Cluster:
    for attempt in range(1, PORT_ATTEMPTS + 1):
        cluster = Cluster(redis_url, tmp_dir, **kwargs)
        _ACTIVE.append(cluster)
        try:
            return cluster.start()
        except ChildDied as exc:
            _ACTIVE.remove(cluster)
            if "Address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                raise
        except BaseException:
            _ACTIVE.remove(cluster)
            raise
    raise AssertionError("unreachable")


def stop_cluster(cluster: Cluster) -> None:
    try:
        cluster.stop()
    finally:
        if cluster in _ACTIVE:
            _ACTIVE.remove(cluster)


@pytest.fixture
def cluster_factory(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Cluster]]:
    """``make(nodes=2, workers=2, redis_url=..., **settings sections)``: a started deployment,
    stopped when the test ends."""
    made: list[Cluster] = []

    def make(redis_url: str | None = None, **kwargs: Any) -> Cluster:
        cluster = start_cluster(
            redis_url or redis_server.url, tmp_path_factory.mktemp("cluster"), **kwargs
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        stop_cluster(cluster)


@pytest.fixture
def dedicated_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own, for tests that stop or restart it. Request it before
    ``cluster_factory`` so that it outlives the deployments using it."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), binary=redis_binary()).start()
    yield server
    server.stop()


@pytest.fixture
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One master, one replica and three sentinels of the test's own (tests/_harness/
    sentinel.py). Request it before ``cluster_factory`` so that it outlives the deployments."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"), binary=redis_binary()).start()
    yield group
    group.stop()


@contextmanager
def _redis_cluster(tmp_path_factory: pytest.TempPathFactory, name: str,
                   **options: Any) -> Iterator[RedisCluster]:
    """A started Redis Cluster whose logs a failing test's report shows; stopped at the end."""
    cluster = RedisCluster(tmp_path_factory.mktemp(name), binary=redis_binary(),
                           **options).start()
    _REDIS_CLUSTERS.append(cluster)
    try:
        yield cluster
    finally:
        _REDIS_CLUSTERS.remove(cluster)
        cluster.stop()


@pytest.fixture
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster]:
    """A Redis Cluster of the test's own: 3 masters with one replica each (tests/_harness/
    redis_cluster.py); other ``RedisCluster`` arguments by indirect parametrization. Request
    it before ``cluster_factory`` so that it outlives the deployments."""
    options = {"replicas": 1, **getattr(request, "param", {})}
    with _redis_cluster(tmp_path_factory, "rcluster", **options) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters (no replicas) shared by the suites that run their tests on
    it as well (each deployment has its own key prefix); not for tests that break it."""
    with _redis_cluster(tmp_path_factory, "shared-rcluster", replicas=0) as cluster:
        yield cluster


_REDIS_CLUSTERS: list[RedisCluster] = []
_RABBITS: list[RabbitMQ] = []


@contextmanager
def _rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A started RabbitMQ whose logs a failing test's report shows; stopped at the end."""
    scripts = rabbitmq_scripts()
    if scripts is None:
        pytest.skip(INSTALL_HINT)
    server = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"), scripts).start()
    _RABBITS.append(server)
    try:
        yield server
    finally:
        _RABBITS.remove(server)
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """One private RabbitMQ for the session (skipped if rabbitmq-server is not installed);
    deployments isolate themselves by virtual host (``rabbitmq_url``)."""
    with _rabbitmq(tmp_path_factory) as server:
        yield server


@pytest.fixture
def rabbitmq_url(rabbitmq_server: RabbitMQ) -> str:
    """An amqp:// URL on a virtual host of the test's own."""
    return rabbitmq_server.url(rabbitmq_server.new_vhost())


@pytest.fixture
def dedicated_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A RabbitMQ of the test's own, for tests that stop or restart it. Request it before
    ``cluster_factory`` so that it outlives the deployments using it."""
    with _rabbitmq(tmp_path_factory) as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for cluster in _ACTIVE:
            report.sections.append((f"clarion logs ({cluster.tmp_dir})", cluster.logs()))
        for rc in _REDIS_CLUSTERS:
            report.sections.append((f"redis cluster logs ({rc.tmp_dir})", rc.logs(1500)))
        for rabbit in _RABBITS:
            report.sections.append((f"rabbitmq logs ({rabbit.dir})", rabbit.log_tail()))
