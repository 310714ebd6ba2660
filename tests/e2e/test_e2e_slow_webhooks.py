"""One app's slow webhook receivers never stall another app's live delivery.

App 2 has two webhook endpoints, one trickling its answers a byte a second and one never
answering, and a client keeps occupying and vacating channels, so webhook attempts against
them keep coming. Meanwhile app 1 publishes 80 events/s through the official SDK to a
subscriber on a node: the time from publish to receipt at the subscriber stays p99 < 100 ms,
as live delivery runs in a worker process of its own (``worker.groups``), and every webhook
attempt ends at ``webhooks.timeout``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import pytest
from _harness import PusherClient
from _harness.client import data_of
from _harness.cluster import APP_ID, APP_KEY, APP_SECRET
from _harness.slow_peer import SlowPeer

pytestmark = [pytest.mark.slow, pytest.mark.fault]

RATE = 80  # events per second
SECONDS = 10
P99_MS = 100.0
WEBHOOK_TIMEOUT = 5.0
APP2 = {"id": "2", "key": "app2-key", "secret": "app2-secret"}
WEBHOOK_EVENTS = ["channel_occupied", "channel_vacated"]


@pytest.fixture
def peers() -> Iterator[tuple[SlowPeer, SlowPeer]]:
    trickler, hanger = SlowPeer("trickle", interval=1.0), SlowPeer("hang")
    yield trickler, hanger
    trickler.close()
    hanger.close()


@pytest.fixture
def cluster(cluster_factory, peers):
    trickler, hanger = peers
    app2 = {**APP2, "webhooks": [{"url": p.url(), "events": WEBHOOK_EVENTS} for p in peers]}
    return cluster_factory(
        nodes=1, workers=1,
        apps=[{"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}, app2],
        webhooks={"timeout": WEBHOOK_TIMEOUT, "retry_schedule": [1, 1, 1], "jitter": 0.0,
                  "batch_window": 0.05, "debounce": 0.2, "tick": 0.05,
                  "allowed_networks": ["127.0.0.0/8"]},
    )


class Churn:
    """An app 2 client subscribing to a new channel and leaving it, over and over: each
    occupies and vacates a channel, so each brings webhook attempts at both endpoints."""

    def __init__(self, cluster, pause: float = 0.1) -> None:
        self.client = PusherClient.connect(cluster.ws_url(0, key=APP2["key"]))
        self.pause = pause
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            channel = f"churn-{n}"
            self.client.subscribe(channel)
            self.client.unsubscribe(channel)
            self.client.pending.clear()
            n += 1
            time.sleep(self.pause)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)
        self.client.close()


def publish(cluster, channel: str, count: int, rate: float) -> None:
    """``count`` events at ``rate`` per second, each carrying the time it was published."""
    sdk = cluster.pusher()
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        sdk.trigger(channel, "tick", {"n": n, "t": time.monotonic()})


def latencies_ms(client: PusherClient, count: int, timeout: float) -> dict[int, float]:
    """Publish-to-receipt time of each event received, by number."""
    got: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        frame = client.next_frame(0.2)
        if frame is not None and frame.get("event") == "tick":
            data = data_of(frame)
            got[data["n"]] = (time.monotonic() - data["t"]) * 1000
    return got


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def test_live_latency_holds_while_another_app_s_webhook_receivers_trickle_and_hang(
        cluster, peers):
    trickler, hanger = peers
    subscriber = cluster.client(0)
    subscriber.subscribe("ticks")
    publish(cluster, "ticks", 20, RATE)  # warm up the path
    assert len(latencies_ms(subscriber, 20, 10)) == 20

    churn = Churn(cluster)
    try:
        deadline = time.monotonic() + 20
        while not (trickler.open_count or hanger.open_count):
            assert time.monotonic() < deadline, "no webhook attempt reached the slow receivers"
            time.sleep(0.05)
        sender = threading.Thread(target=publish, args=(cluster, "ticks", RATE * SECONDS, RATE))
        sender.start()
        got = latencies_ms(subscriber, RATE * SECONDS, SECONDS + 10)
        sender.join(30)
        busy = (trickler.open_count, hanger.open_count)
    finally:
        churn.stop()
        subscriber.close()

    values = sorted(got.values())
    summary = (f"{len(values)}/{RATE * SECONDS} received, p50 {statistics.median(values):.1f} "
               f"ms, p99 {p99(values):.1f} ms, max {values[-1]:.1f} ms" if len(values) > 1
               else f"{len(values)}/{RATE * SECONDS} received")
    print(f"live latency with slow webhook receivers: {summary}; attempts open at the end "
          f"(trickled, hung): {busy}")
    assert len(values) == RATE * SECONDS, summary
    assert p99(values) < P99_MS, summary
    assert all(busy), f"the slow receivers were not kept busy to the end: {busy}"
    # Every attempt that ended was given up at the webhook timeout, not held for minutes.
    held = [e.held for p in peers for e in p.finished()]
    assert held and max(held) <= WEBHOOK_TIMEOUT + 1.0, held
