"""`clarion up` and the operator commands run the way a new user runs them: each one a process
started in the same directory, with no CLARION_* variable of the test run leaking in."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.embedded_redis import free_port

# The repository root: children import `gateway` from it whatever their working directory.
ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def clarion(cwd: Path, *args: str, timeout: float = 60, **env: str
            ) -> subprocess.CompletedProcess[str]:
    """One `clarion ...` command in ``cwd``, as a user types it (stdout and stderr apart)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd,
                          env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


class Up:
    """A `clarion up` process in ``cwd`` (its data dir: ``cwd/.clarion``), output read line by
    line. Ports are free ones, given through the environment like a user would."""

    def __init__(self, cwd: Path, *args: str, ws_port: int | None = None,
                 api_port: int | None = None, **env: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.ws_port = ws_port or free_port()
        self.api_port = api_port or free_port()
        self.redis_port = free_port()
        settings = dict(
            CLARION_WEBSOCKET__PORT=str(self.ws_port),
            CLARION_API__PORT=str(self.api_port),
            CLARION_API__WORKERS="1",
            CLARION_WORKER__CONCURRENCY="1",
            CLARION_LOG_LEVEL="warning",
        )
        settings.update(env)
        # --redis-port: 6379 may be free here, and other runs on this machine would share it.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args, "up",
             "--redis-port", str(self.redis_port)],
            cwd=cwd, env=clean_env(**settings), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_banner(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        banner: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, self.text
                continue
            banner.append(line)
            if "Press Ctrl-C to stop." in line:
                return "".join(banner)
        raise AssertionError(f"no banner in {timeout}s:\n{self.text}")

    def wait_exit(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # the reader thread drains what is left
        return code

    def stop(self, sig: int = signal.SIGINT, timeout: float = 40) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
