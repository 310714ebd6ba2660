"""Fixtures for the worker tests: settings on the test Redis, worker subprocesses started
through ``workers.main.run_worker`` (stopped after the test), and a bus collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from gateway.state.keys import Keys
from tests.workers.worker_harness import APP, BusCollector, WorkerProcess


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis={"url": redis_url, "key_prefix": key_prefix},
        apps=[APP],
        worker={"concurrency": 2, "visibility_timeout": 300, "restore_interval": 1},
        history={"max_events": 100_000},
    )


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis.key_prefix)


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(worker_settings: Settings | None = None, concurrency: int = 2) -> WorkerProcess:
        w = WorkerProcess(worker_settings or settings, tmp_path / f"worker{len(started)}.log",
                          concurrency)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def bus(redis_url: str, keys: Keys) -> Iterator[BusCollector]:
    collector = BusCollector(redis_url, keys.bus_channels)
    yield collector
    collector.close()
