"""Real pusher-js 8 and Laravel Echo 2 clients in Node, with or without Clarion's resume
extension (clients/js), and numbered events published through the official ``pusher`` SDK.

``Fleet`` is one Node process (js/fleet.mjs) holding ``count`` clients; ``Publisher`` sends
numbered ``seq`` events (``{"n": 0, 1, 2...}`` per channel) at a steady rate from a thread;
``sequence_problems`` says what is wrong with what a client received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pusher
from _harness.cluster import APP_KEY, APP_SECRET, Cluster
from _harness.node import NodeScript, npm_modules

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "clients" / "js"
FLEET = Path(__file__).parent / "js" / "fleet.mjs"
# Installed from the npm registry into a cache directory the first time (_harness/node.py).
NPM_PACKAGES = ["pusher-js@8", "laravel-echo@2", "playwright-core@1"]


def install_node_modules() -> Path:
    """pusher-js, Laravel Echo and playwright-core in a cache directory; skips the test on a
    machine without node and npm."""
    return npm_modules("continuity", NPM_PACKAGES, "to run pusher-js and Laravel Echo")


class Fleet(NodeScript):
    """``count`` pusher-js clients (``flavor`` "pusher", "echo" or "mixed") in one Node
    process, connected to ``ws_port``; ``resume`` turns the extension on for every one."""

    def __init__(self, node_modules: Path, ws_port: int, count: int = 1, *,
                 resume: bool = True, flavor: str = "pusher",
                 users: list[str] | None = None) -> None:
        env = {"NODE_MODULES": str(node_modules),
               "EXTENSION": str(EXTENSION / "index.cjs"), "KEY": APP_KEY, "SECRET": APP_SECRET,
               "WS_PORT": str(ws_port), "COUNT": str(count), "FLAVOR": flavor,
               "RESUME": "1" if resume else "0", "USERS": json.dumps(users or [])}
        self.count = count
        super().__init__(FLEET, env, "Node fleet")
        self.answer("ready", 30)

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        self.send(op=op, **fields)
        return self.answer("ok" if op in ("subscribe", "unsubscribe") else op, 60)

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
