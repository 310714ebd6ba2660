"""gateway/state/redis_client.py without servers: the Celery broker on Sentinel, and how the
failover watch reads the sentinels' announcements (the real thing: tests/e2e/
test_e2e_sentinel.py)."""

from __future__ import annotations

import os
import time

import pytest

from config.settings import RedisSettings
from gateway.state.redis_client import (
    FailoverInProgress,
    FailoverWatch,
    RedisNotConfigured,
    celery_broker,
    sync_client,
)

SENTINELS = RedisSettings(sentinels=["10.0.0.1:26379", "10.0.0.2:26380"],
                          service_name="clarion", password="p@ss/word", db=3,
                          sentinel_password="spw")


def test_celery_broker_on_sentinel() -> None:
    url, options = celery_broker(SENTINELS)
    assert url == ("sentinel://:p%40ss%2Fword@10.0.0.1:26379/3;"
                   "sentinel://:p%40ss%2Fword@10.0.0.2:26380/3")
    assert options["master_name"] == "clarion"
    assert options["sentinel_kwargs"]["password"] == "spw"


def test_celery_broker_on_a_url() -> None:
    assert celery_broker(RedisSettings(url="redis://h:1/0")) == ("redis://h:1/0", {})
    with pytest.raises(RedisNotConfigured):
        celery_broker(RedisSettings())
    with pytest.raises(RedisNotConfigured, match="the API needs Redis"):
        sync_client(RedisSettings(), "the API")


def _watch() -> FailoverWatch:
    watch = FailoverWatch(SENTINELS)
    watch._pid = os.getpid()  # no listener threads: the announcements are fed by hand
    return watch


def test_a_failover_refuses_until_the_switch() -> None:
    watch = _watch()
    switched: list[int] = []
    watch.subscribe(lambda: switched.append(watch.generation))
    assert watch.check() == 0
    watch.handle("+try-failover", "master clarion 10.0.0.5 6379")
    with pytest.raises(FailoverInProgress):
        watch.check()
    assert watch.check(pause=False) == 0  # kombu's pool is not paused
    watch.handle("+switch-master", "clarion 10.0.0.5 6379 10.0.0.6 6379")
    assert watch.check() == 1 and switched == [1]


def test_other_services_and_aborts() -> None:
    watch = _watch()
    watch.handle("+selected-slave", "slave 10.0.0.6:6379 10.0.0.6 6379 @ other 10.0.0.5 6379")
    watch.handle("+switch-master", "other 10.0.0.5 6379 10.0.0.6 6379")
    assert watch.check() == 0
    watch.handle("+selected-slave", "slave 10.0.0.6:6379 10.0.0.6 6379 @ clarion 10.0.0.5 6379")
    assert watch.paused_until > time.monotonic()
    watch.handle("-failover-abort-no-good-slave", "master clarion 10.0.0.5 6379")
    assert watch.check() == 0


def test_chain_heads_make_a_rolled_back_log_report_its_loss(redis_client, key_prefix) -> None:
    """Events 2 and 3 were accepted on a master that died before its replica had them: the
    replica (here: the same Redis, rolled back by hand) would link event 4 to event 1; the
    API's heads put the counter back, so a reader at event 1 is told ("expired")."""
    from gateway.state.chain_heads import ChainHeads
    from gateway.state.history import History
    from gateway.state.keys import Keys

    keys = Keys(f"{key_prefix}heads:")
    history = History(redis_client, keys, 100, 600)
    history.heads = ChainHeads()
    first, *lost = [history.accept("1", [("c", "e", str(i), None)])[0] for i in range(3)]
    other = history.accept("1", [("d", "e", "x", None)])[0]  # a channel that lost nothing
    redis_client.set(keys.serial("1", "c"), first.serial)  # the replica had event 1 only
    redis_client.zremrangebyscore(keys.history("1", "c"), f"({first.serial}", "+inf")

    assert history.heads.restore(redis_client) == [keys.serial("1", "c")]
    fourth = history.accept("1", [("c", "e", "4", None)])[0]
    assert fourth.prev == lost[-1].serial
    assert history.page("1", "c", first.serial, 10).gap == "expired"
    assert history.heads.restore(redis_client) == []  # nothing behind any more
    assert int(redis_client.get(keys.serial("1", "d"))) == other.serial
