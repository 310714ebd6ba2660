"""Helpers for the worker tests: real Celery worker processes (``workers.main.run_worker`` in
a subprocess) on the test Redis, and a bus subscriber that collects what they publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil
import redis

from config.settings import Settings, settings_to_env

ROOT = Path(__file__).resolve().parents[2]
APP = {"id": "1", "key": "app-key", "secret": "app-secret", "max_batch_size": 100}


class WorkerProcess:
    """``run_worker(settings)`` in its own process group, its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path, concurrency: int = 2) -> None:
        self.log_path = log_path
        code = (
            "from config import load_settings; from workers.main import run_worker; "
            f"run_worker(load_settings(), queues=('live',), concurrency={concurrency})"
        )
        env = {**os.environ, **settings_to_env(settings)}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready:\n{self.log()}")
            time.sleep(0.05)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children()

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.kill()
        else:
            # The pool children of a worker that exited must not outlive the test.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


class BusCollector:
    """Subscribes to the bus and collects decoded messages on a background thread."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.messages: list[dict] = []
        # (channel, serial) of every event seen, kept as messages arrive.
        self.seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            if msg is not None:
                decoded = orjson.loads(msg["data"])
                self.seen.add((decoded.get("c"), decoded.get("s")))
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
