"""``clarion worker`` options: the pool is prefork unless asked otherwise; the worker processes
`clarion up` starts, one per ``worker.groups`` entry."""

from __future__ import annotations

import pytest

from config.settings import Settings
from workers.groups import worker_commands
from workers.main import worker_argv


def _settings() -> Settings:
    return Settings(redis={"url": "redis://127.0.0.1:1/0"})


def test_prefork_is_the_default_pool():
    argv = worker_argv(_settings(), ("live",))
    assert "--pool=prefork" in argv and "--queues=live" in argv


def test_threads_pool_on_request():
    assert "--pool=threads" in worker_argv(_settings(), ("live",), 4, pool="threads")


def test_unknown_pool_refused():
    with pytest.raises(ValueError, match="pool"):
        worker_argv(_settings(), ("live",), pool="gevent")


def test_up_starts_one_worker_per_group():
    settings = _settings().with_overrides(worker={"concurrency": 3, "groups": [
        {"queues": ["live"]},
        {"queues": ["webhooks", "push"], "concurrency": 12, "pool": "threads"},
    ]})
    assert worker_commands(settings) == [
        ("worker[live]",
         ["worker", "--queues", "live", "--concurrency", "3", "--pool", "prefork"]),
        ("worker[webhooks,push]",
         ["worker", "--queues", "webhooks,push", "--concurrency", "12", "--pool", "threads"]),
    ]
