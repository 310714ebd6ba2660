"""Node.js programs the tests drive: npm packages installed once into a cache directory, and a
``node SCRIPT`` process that takes JSON commands on stdin and writes JSON lines on stdout.

Two ways of reading such a process: ``NodeScript.answer`` for scripts that answer each command
(the browser drivers, the continuity fleet), ``Observer.wait`` for scripts that report what
their clients see as it happens (pusher-js in tests/compat and tests/xhr).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

CACHE = Path(os.environ.get("CLARION_TEST_CACHE", Path.home() / ".cache" / "clarion-tests"))


def npm_modules(cache_name: str, packages: list[str], why: str) -> Path:
    """``packages`` (``name@range``) installed from the npm registry into a cache directory the
    first time; the test is skipped on a machine without node and npm (``why`` says what they
    are needed for), and fails when npm cannot install them."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip(f"node and npm are needed {why}")
    target = CACHE / cache_name
    modules = target / "node_modules"
    if not all((modules / p.rsplit("@", 1)[0]).is_dir() for p in packages):
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
             str(target), *packages], capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"npm could not install {packages}: {done.stderr[-800:]}")
    return modules


class NodeScript:
    """One ``node SCRIPT`` process: JSON commands in, JSON lines out."""

    def __init__(self, script: Path, env: Mapping[str, str], name: str = "node script") -> None:
        self.name = name
        self.proc = subprocess.Popen(["node", str(script)], env={**os.environ, **env},
                                     text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def answer(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next line, which must be of ``kind``."""
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the {self.name} did not answer ({kind}); "
                                 f"exit code {self.proc.poll()}") from None
        assert got["kind"] == kind, got
        return got

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Ask the script to quit (a stopped one is woken first); kill it if it does not."""
        if self.proc.poll() is None:
            self.resume()
            try:
                self.send(op="quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


class Observer(NodeScript):
    """A script that reports observations (``{"kind": ...}`` lines) as they happen."""

    def __init__(self, script: Path, env: Mapping[str, str], name: str = "pusher-js") -> None:
        super().__init__(script, env, name)
        self.seen: list[dict[str, Any]] = []

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
             since: int = 0) -> dict[str, Any]:
        """The first observation from index ``since`` on that ``match``es."""
        for seen in self.seen[since:]:
            if match(seen):
                return seen
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(item)
            if match(item):
                return item
        raise AssertionError(f"{self.name} did not report it; it saw: {self.seen[-12:]}")

    def kind(self, kind: str, timeout: float = 10.0, since: int = 0,
             **fields: Any) -> dict[str, Any]:
        """The first ``kind`` observation whose fields have the given values."""
        return self.wait(lambda o: o["kind"] == kind and all(o.get(k) == v
                                                             for k, v in fields.items()),
                         timeout, since)

    def mark(self) -> int:
        """An index for ``wait(since=...)``: what is observed from now on."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return len(self.seen)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
