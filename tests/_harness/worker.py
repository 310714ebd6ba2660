"""Real Clarion processes started with ``python -c`` for the worker, webhook and push suites.

``ProcessRunner`` runs a snippet in its own process group with the settings in its environment
and its output in a log file; ``CeleryWorker`` is ``workers.main.run_worker`` on some queues,
ready once Celery logs `` ready.``. Each suite keeps its own thin subclass (``WorkerProcess``,
``WebhookWorker``, ``PushWorker``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import psutil

from config.settings import Settings, settings_to_env

ROOT = Path(__file__).resolve().parents[2]


class ProcessRunner:
    """``python -c code`` in its own process group (session), output appended to ``log_path``."""

    # SIGTERM the whole process group on stop (else only the main process, which then shuts
    # its pool down itself).
    term_group = False
    stop_timeout = 15.0

    def __init__(self, settings: Settings, log_path: Path, code: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **settings_to_env(settings)},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children()

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and its children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, wait, SIGKILL the group if still running; children left behind by a main
        process that exited are killed too (they must not outlive the test)."""
        if self.proc.poll() is None:
            if self.term_group:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.kill()
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


class CeleryWorker(ProcessRunner):
    """``run_worker(load_settings(), queues=..., concurrency=..., pool=...)`` in its own
    process."""

    def __init__(self, settings: Settings, log_path: Path, queues: tuple[str, ...],
                 concurrency: int = 2, pool: str = "prefork") -> None:
        code = (
            "from config import load_settings\n"
            "from workers.main import run_worker\n"
            f"run_worker(load_settings(), queues={tuple(queues)!r}, concurrency={concurrency},"
            f" pool={pool!r})\n"
        )
        super().__init__(settings, log_path, code)

    def wait_ready(self, timeout: float = 30.0) -> Self:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready:\n{self.log()}")
            time.sleep(0.05)
        return self
