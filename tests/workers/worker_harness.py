"""Helpers for the worker tests: real Celery worker processes (``workers.main.run_worker`` in
a subprocess) on the test Redis, and a bus subscriber that collects what they publish."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import redis
from _harness.worker import CeleryWorker

from config.settings import Settings

APP = {"id": "1", "key": "app-key", "secret": "app-secret", "max_batch_size": 100}


class WorkerProcess(CeleryWorker):
    """``run_worker(settings, queues=("live",))`` in its own process group, its output in a
    log file."""

    def __init__(self, settings: Settings, log_path: Path, concurrency: int = 2) -> None:
        super().__init__(settings, log_path, ("live",), concurrency)


def _events(msg: dict) -> list[dict]:
    """A batch message (``b``) as the ``e`` messages of its events; others as they are."""
    if msg.get("t") != "b":
        return [msg]
    return [{"t": "e", "a": msg["a"], "c": c, "e": e, "d": d, "s": s, "p": p, "x": x or None,
             "u": None}
            for c, e, d, x, s, p in msg["ev"]]


class BusCollector:
    """Subscribes to the bus topics matching ``pattern`` (every channel's: ``P bus:*``) and
    collects decoded messages on a background thread."""

    def __init__(self, url: str, pattern: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(pattern)
        self.messages: list[dict] = []
        # The topic each of ``messages`` came on.
        self.topics: list[str] = []
        # (channel, serial) of every event seen, kept as messages arrive.
        self.seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            if msg is not None:
                for decoded in _events(orjson.loads(msg["data"])):
                    self.seen.add((decoded.get("c"), decoded.get("s")))
                    self.topics.append(msg["channel"].decode())
                    self.messages.append(decoded)

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.messages):
                return True
            time.sleep(0.02)
        return predicate(self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()
