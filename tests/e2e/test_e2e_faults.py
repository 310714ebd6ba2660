"""Faults in the middle of a burst: a worker SIGKILLed (its main process, or one pool process)
and Redis restarted. Every event the API accepted (answered 200) must still reach every
subscriber, once, in order per channel."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import pusher
import pytest
import redis
from _harness import Cluster, PusherClient, restart_redis
from _harness.client import data_of

pytestmark = [pytest.mark.slow, pytest.mark.fault]

# One client per node subscribes to every channel of a burst (a few hundred).
MANY_CHANNELS = {"max_channels_per_connection": 2000}
# Short broker timeouts so that a dead worker's tasks come back within seconds.
FAST_REDELIVERY = {
    "worker": {"concurrency": 2, "visibility_timeout": 3, "restore_interval": 1},
    "websocket": {"reconcile_interval": 1.0, **MANY_CHANNELS},
}


class Burst:
    """Sender threads publishing numbered events. Each request publishes one event to two
    channels: the sender's own ordered channel (the order the sender's events were accepted in
    is the order subscribers must see) and a channel used by that request only. A node fills a
    gap on the ordered channel from history as soon as a later event arrives, but nothing
    follows on the single-use channel: its event arrives only if the task that carries it is
    delivered, or redelivered after its worker died."""

    def __init__(self, cluster: Cluster, senders: int, per_sender: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.cluster = cluster
        self.senders = senders
        self.per_sender = per_sender
        self.ordered = [f"burst-{tag}-{t}" for t in range(senders)]
        self.single_use = [
            [f"once-{tag}-{t}-{n}" for n in range(per_sender)] for t in range(senders)
        ]
        self.accepted: dict[str, list[int]] = defaultdict(list)
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def count(self) -> int:
        return self._count

    @property
    def channels(self) -> list[str]:
        return self.ordered + [ch for chans in self.single_use for ch in chans]

    def start(self, pause: float = 0.0) -> Burst:
        for t in range(self.senders):
            thread = threading.Thread(target=self._send, args=(t, pause), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _send(self, sender: int, pause: float) -> None:
        sdk = self.cluster.pusher(timeout=10)
        ordered = self.ordered[sender]
        for n in range(self.per_sender):
            if self._stop.is_set():
                return
            once = self.single_use[sender][n]
            try:
                sdk.trigger([ordered, once], "burst", {"n": n})
            except (pusher.errors.PusherError, OSError) as exc:  # 503 while Redis is down
                with self._lock:
                    self.refused.append(f"{type(exc).__name__}: {str(exc)[:80]}")
                time.sleep(0.1)
                continue
            with self._lock:
                self.accepted[ordered].append(n)
                self.accepted[once].append(n)
                self._count += 1
            if pause:
                time.sleep(pause)

    def wait_for_count(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._count < n:
            assert time.monotonic() < deadline, f"only {self._count} events accepted"
            assert any(t.is_alive() for t in self._threads), "senders finished early"
            time.sleep(0.01)

    def join(self, timeout: float = 120.0) -> None:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a sender is stuck"

    def stop(self) -> None:
        self._stop.set()


def await_delivery(
    client: PusherClient, accepted: dict[str, list[int]], timeout: float
) -> tuple[dict[str, list[int]], dict[str, set[int]]]:
    """Read until every accepted event has arrived, or ``timeout``: what arrived per channel,
    and what is still missing."""
    received: dict[str, list[int]] = defaultdict(list)
    wanted = {ch: set(ns) for ch, ns in accepted.items()}

    def missing() -> dict[str, set[int]]:
        return {ch: left for ch, ns in wanted.items() if (left := ns - set(received[ch]))}

    deadline = time.monotonic() + timeout
    while missing() and time.monotonic() < deadline:
        frame = client.next_frame(0.5)
        if frame is not None and frame.get("event") == "burst":
            received[frame["channel"]].append(data_of(frame)["n"])
    # Anything still in flight (events whose request failed but that were accepted anyway).
    while (frame := client.next_frame(0.3)) is not None:
        if frame.get("event") == "burst":
            received[frame["channel"]].append(data_of(frame)["n"])
    return received, missing()


def assert_at_most_once_in_order(received: dict[str, list[int]]) -> None:
    for channel, ns in received.items():
        dups = sorted({n for n in ns if ns.count(n) > 1})
        assert not dups, f"{channel}: delivered twice: {dups[:10]}"
        assert ns == sorted(ns), f"{channel}: out of order {ns}"


def subscribed_clients(cluster: Cluster, channels: list[str]) -> list[PusherClient]:
    """One subscriber per node, on every channel."""
    clients = [cluster.client(i) for i in range(len(cluster.node_ports))]
    for c in clients:
        c.subscribe_all(channels)
    return clients


# kombu's Redis transport takes a message off the queue (BRPOP) before it records it as
# unacknowledged (HSET ``unacked``): a worker main process killed in between loses that task.
# Its events are in history; the nodes' periodic reconciliation (websocket.reconcile_interval)
# finds the channel's counter ahead of what was delivered and fills them from there.


def run_burst_with_fault(
    cluster: Cluster, fault: Callable[[], object], total: int = 300, senders: int = 3,
    fault_at: int = 100, pause: float = 0.0, timeout: float = 30.0,
) -> Burst:
    burst = Burst(cluster, senders, total // senders)
    clients = subscribed_clients(cluster, burst.channels)
    lost: dict[str, set[int]] = {}
    try:
        burst.start(pause)
        burst.wait_for_count(fault_at)
        fault()
        burst.join()
        assert burst.count >= fault_at
        for i, client in enumerate(clients):
            received, missing = await_delivery(client, burst.accepted, timeout)
            assert_at_most_once_in_order(received)
            ordered = {ch: ns for ch, ns in missing.items() if ch in burst.ordered}
            assert not ordered, f"node {i}: accepted events lost on ordered channels: {ordered}"
            lost.update(missing)
    finally:
        for c in clients:
            c.close()
    assert not lost, f"accepted events not delivered within {timeout}s: {sorted(lost.items())[:10]}"
    return burst


def assert_broker_drained(cluster: Cluster, timeout: float = 20.0) -> None:
    """Nothing left in the ``live`` queue nor unacknowledged (the Redis transport's ``unacked``
    hash, under the deployment's key prefix): a dead worker's tasks were restored and done."""
    client = redis.Redis.from_url(cluster.settings.redis.url)
    prefix = cluster.settings.redis.key_prefix
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = client.hlen(f"{prefix}unacked"), client.llen(f"{prefix}live")
            if left == (0, 0):
                return
            assert time.monotonic() < deadline, f"unacked, queued after {timeout}s: {left}"
            time.sleep(0.2)
    finally:
        client.close()


def test_worker_main_process_sigkilled_mid_burst(cluster_factory):
    cluster = cluster_factory(nodes=1, workers=2, **FAST_REDELIVERY)
    burst = run_burst_with_fault(
        cluster, lambda: cluster.kill_worker(0), timeout=15
    )
    assert not cluster.workers[0].alive
    assert burst.count == 300 and not burst.refused, burst.refused[:5]
    assert_broker_drained(cluster)


def test_worker_pool_process_sigkilled_mid_burst(cluster_factory):
    cluster = cluster_factory(nodes=1, workers=2, **FAST_REDELIVERY)
    burst = run_burst_with_fault(cluster, lambda: cluster.kill_worker_child(0), timeout=15)
    # The worker survives the loss of a pool process and replaces it.
    assert cluster.workers[0].alive
    assert burst.count == 300 and not burst.refused, burst.refused[:5]
    assert_broker_drained(cluster)


def test_every_worker_killed_then_one_started_again(cluster_factory):
    """No live worker at all for a while: accepted events wait in the broker (and the dead
    workers' unacknowledged ones are restored) until a new worker comes."""
    cluster = cluster_factory(nodes=1, workers=1, **FAST_REDELIVERY)

    def kill_all_then_replace() -> None:
        cluster.kill_worker(0)
        time.sleep(1.0)
        cluster.add_worker()

    burst = run_burst_with_fault(
        cluster, kill_all_then_replace, total=150, fault_at=50, timeout=15)
    assert not burst.refused
    assert_broker_drained(cluster)


def test_redis_restarted_mid_burst(dedicated_redis, cluster_factory):
    cluster = cluster_factory(redis_url=dedicated_redis.url, nodes=2, workers=1,
                              websocket=MANY_CHANNELS)
    burst = run_burst_with_fault(
        cluster, lambda: restart_redis(dedicated_redis, downtime=1.5),
        total=240, senders=2, fault_at=60, pause=0.02, timeout=45,
    )
    # Requests that met the stopped Redis were refused (they do not count as accepted).
    assert burst.refused, "Redis was down for 1.5 s but no request was refused"
    assert burst.count > 60
    cluster.assert_alive()


def ready_of(url: str) -> tuple[int, dict]:
    import requests

    r = requests.get(url, timeout=10)
    return r.status_code, r.json()


def test_ready_is_503_in_api_and_node_while_redis_is_down(dedicated_redis, cluster_factory):
    """Both processes that answer HTTP: 503 with the reason while Redis is stopped, 200 again
    once it is back; the processes themselves stay up."""
    cluster = cluster_factory(redis_url=dedicated_redis.url, nodes=1, workers=0)
    urls = [f"{cluster.api_url}/ready", cluster.node_ready_url(0)]
    assert [ready_of(u)[0] for u in urls] == [200, 200]
    dedicated_redis.stop()
    try:
        for url in urls:
            deadline = time.monotonic() + 15
            while (answer := ready_of(url))[0] != 503:
                assert time.monotonic() < deadline, (url, answer)
                time.sleep(0.2)
            status, body = answer
            assert body["status"] == "unavailable" and body["code"] == 503
            assert body["error"].startswith("Redis"), body
    finally:
        dedicated_redis.start()
    for url in urls:
        deadline = time.monotonic() + 20
        while (answer := ready_of(url))[0] != 200:
            assert time.monotonic() < deadline, (url, answer)
            time.sleep(0.2)
        assert answer[1]["status"] == "ok"
    cluster.assert_alive()
