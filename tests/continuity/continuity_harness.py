"""Real pusher-js 8 and Laravel Echo 2 clients in Node, with or without Clarion's resume
extension (clients/js), and numbered events published through the official ``pusher`` SDK.

``Fleet`` is one Node process (js/fleet.mjs) holding ``count`` clients; ``Publisher`` sends
numbered ``seq`` events (``{"n": 0, 1, 2...}`` per channel) at a steady rate from a thread;
``sequence_problems`` says what is wrong with what a client received.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pusher
import pytest
from _harness.cluster import APP_KEY, APP_SECRET, Cluster

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "clients" / "js"
FLEET = Path(__file__).parent / "js" / "fleet.mjs"
# Installed from the npm registry into a cache directory the first time, as tests/compat does.
NPM_PACKAGES = ["pusher-js@8", "laravel-echo@2", "playwright-core@1"]
CACHE = Path(os.environ.get("CLARION_TEST_CACHE", Path.home() / ".cache" / "clarion-tests"))


def install_node_modules() -> Path:
    """pusher-js, Laravel Echo and playwright-core in a cache directory; skips the test on a
    machine without node and npm."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run pusher-js and Laravel Echo")
    target = CACHE / "continuity"
    modules = target / "node_modules"
    if not all((modules / p.rsplit("@", 1)[0]).is_dir() for p in NPM_PACKAGES):
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
             str(target), *NPM_PACKAGES], capture_output=True, text=True, timeout=600,
            check=False)
        if done.returncode != 0:
            raise RuntimeError(f"npm could not install {NPM_PACKAGES}: {done.stderr[-800:]}")
    return modules


class Fleet:
    """``count`` pusher-js clients (``flavor`` "pusher", "echo" or "mixed") in one Node
    process, connected to ``ws_port``; ``resume`` turns the extension on for every one."""

    def __init__(self, node_modules: Path, ws_port: int, count: int = 1, *,
                 resume: bool = True, flavor: str = "pusher",
                 users: list[str] | None = None) -> None:
        env = {**os.environ, "NODE_MODULES": str(node_modules),
               "EXTENSION": str(EXTENSION / "index.cjs"), "KEY": APP_KEY, "SECRET": APP_SECRET,
               "WS_PORT": str(ws_port), "COUNT": str(count), "FLAVOR": flavor,
               "RESUME": "1" if resume else "0", "USERS": json.dumps(users or [])}
        self.count = count
        self.proc = subprocess.Popen(["node", str(FLEET)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._answer("ready", 30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))

    def _answer(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the Node fleet did not answer ({kind}); "
                                 f"exit code {self.proc.poll()}") from None
        assert got["kind"] == kind, got
        return got

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._answer("ok" if op in ("subscribe", "unsubscribe") else op, 60)

    def subscribe(self, channels: list[str] | list[list[str]], subscribed: int = 1,
                  timeout: float = 30.0) -> None:
        """Subscribe, and wait until every client's every channel has succeeded
        ``subscribed`` times (counting the earlier subscriptions)."""
        self.ask("subscribe", channels=channels)
        self.wait_subscribed(subscribed, timeout)

    def status(self) -> dict[str, Any]:
        return self.ask("status")

    def wait(self, check: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {status}")
            time.sleep(0.2)

    def wait_subscribed(self, times: int = 1, timeout: float = 30.0) -> None:
        self.wait(lambda s: s["connected"] == self.count and s["min_subscribed"] >= times,
                  f"{self.count} clients subscribed {times} time(s)", timeout)

    def wait_received(self, per_client: int, timeout: float = 30.0) -> None:
        """Until every client has at least ``per_client`` events (all channels together)."""
        self.wait(lambda s: min(s["received"]) >= per_client,
                  f"{per_client} events at every client", timeout)

    def report(self) -> list[dict[str, Any]]:
        return self.ask("report")["clients"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"op":"quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


class Publisher:
    """Numbered ``seq`` events on ``channels`` through the official SDK, ``rate`` events/s in
    batches of ``batch`` (``trigger_batch``), the channels taking turns. One thread, so each
    channel's numbers are accepted in order."""

    def __init__(self, cluster: Cluster, channels: list[str], rate: float = 200.0,
                 batch: int = 10) -> None:
        self.sdk: pusher.Pusher = cluster.pusher(timeout=10)
        self.channels = channels
        self.rate = rate
        self.batch = batch
        self.next = dict.fromkeys(channels, 0)
        self.accepted: dict[str, list[int]] = {ch: [] for ch in channels}
        self.failed: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def sent(self) -> int:
        return sum(len(v) for v in self.accepted.values())

    def publish(self, total: int) -> None:
        """``total`` events, paced, in this thread."""
        interval = self.batch / self.rate
        due = time.monotonic()
        turn = 0
        left = total
        while left > 0:
            time.sleep(max(0.0, due - time.monotonic()))
            due += interval
            items = []
            for _ in range(min(self.batch, left)):
                channel = self.channels[turn % len(self.channels)]
                items.append((channel, self.next[channel]))
                self.next[channel] += 1
                turn += 1
            left -= len(items)
            batch = [{"channel": ch, "name": "seq", "data": json.dumps({"n": n})}
                     for ch, n in items]
            try:
                self.sdk.trigger_batch(batch)
            except (pusher.errors.PusherError, OSError) as exc:
                self.failed.append(f"{type(exc).__name__}: {str(exc)[:100]}")
                continue
            for ch, n in items:
                self.accepted[ch].append(n)

    def start(self, total: int) -> Publisher:
        """``total`` events from a background thread; ``join`` waits for the last."""
        self._thread = threading.Thread(target=self.publish, args=(total,), daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the publisher is stuck"
        assert not self.failed, f"requests refused: {self.failed[:3]}"


def sequence_problems(got: list[int], expected: list[int]) -> list[str]:
    """What is wrong with ``got`` (numbers in arrival order) against ``expected`` (in order,
    each once): empty when they are equal."""
    if got == expected:
        return []
    problems = []
    missing = sorted(set(expected) - set(got))
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:5]}")
    if len(set(got)) != len(got):
        problems.append(f"{len(got) - len(set(got))} received twice")
    extra = sorted(set(got) - set(expected))
    if extra:
        problems.append(f"never sent: {extra[:5]}")
    if got != sorted(got):
        at = next(i for i in range(1, len(got)) if got[i] < got[i - 1])
        problems.append(f"out of order at {got[at - 1:at + 2]}")
    return problems or ["differs"]


def fleet_problems(clients: list[dict[str, Any]], expected: dict[str, list[int]]) -> list[str]:
    """Every client's problems on every channel it holds (empty: every client received every
    expected event of its channels, in order, once)."""
    problems = []
    for i, client in enumerate(clients):
        for channel, got in client["received"].items():
            for problem in sequence_problems(got, expected[channel]):
                problems.append(f"client {i} ({client['flavor']}) {channel}: {problem}")
    return problems
