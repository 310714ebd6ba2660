"""Nothing accepted is lost, under faults, at load: hundreds of events per second through the
official SDK, subscribers on two nodes counting sequence numbers (tests/_harness/load.py).

Every event the API answered 200 must reach every subscriber, once, in its channel's order,
whatever happens to Redis and the workers meanwhile. Run them all with ``pytest -m fault``.
"""

from __future__ import annotations

import signal
import time

import pytest
from _harness import Cluster, restart_redis
from _harness.load import Stream, Subscribers, finish, kill_worker_repeatedly, percentile

pytestmark = [pytest.mark.slow, pytest.mark.fault]

CHANNELS = [f"seq-{i}" for i in range(20)]
# Broker restores of a dead worker's tasks within seconds (the default is minutes); the nodes'
# reconcile tick at its default.
FAST_RESTORE = {"worker": {"concurrency": 1, "visibility_timeout": 5, "restore_interval": 1}}


def _load(cluster: Cluster, rate: float, per_node: int = 3) -> tuple[Stream, Subscribers]:
    urls = [cluster.ws_url(i) for i in range(len(cluster.node_ports))]
    subscribers = Subscribers(urls, CHANNELS, per_node=per_node).start()
    return Stream(cluster, CHANNELS, rate), subscribers


def _workers_alive(cluster: Cluster) -> None:
    for worker in cluster.workers:
        assert worker.alive, worker.describe_exit() + "\n" + worker.log_tail(3000)


def test_redis_restarted_at_500_events_per_second(dedicated_redis, cluster_factory):
    """Redis stops (SIGTERM, its append-only file kept) for 3 s while 500 events/s are
    published to two nodes with two workers, then comes back. Requests meanwhile are refused
    (503), nothing accepted is lost, the workers survive, and delivery is live again after."""
    cluster = cluster_factory(redis_url=dedicated_redis.url, nodes=2, workers=2,
                              worker={**FAST_RESTORE["worker"], "concurrency": 2})
    stream, subscribers = _load(cluster, rate=500)
    stream.start()
    time.sleep(4)
    restart_redis(dedicated_redis, downtime=3.0)
    back = time.time()
    time.sleep(6)
    try:
        finish(stream, subscribers)
    finally:
        print(f"accepted {stream.count} events in {stream.requests} requests, "
              f"{len(stream.refused)} refused")
    assert stream.refused, "Redis was down for 3 s but no request was refused"
    assert stream.count > 4000
    _workers_alive(cluster)
    cluster.assert_alive()
    settled = subscribers.latencies(since=back + 3)
    print(f"latency 3 s after Redis came back: p50 {percentile(settled, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(settled, 0.99) * 1000:.0f} ms over {len(settled)} deliveries")
    assert percentile(settled, 0.5) < 0.2, "delivery did not become live again"


def test_worker_main_process_sigkilled_five_times_in_one_stream(cluster_factory):
    """The only live worker's main process (its pool too) is SIGKILLed, and a new one started
    a second later, five times during one 500 events/s stream: nothing accepted is lost or
    repeated, and delivery never stalls for long (the nodes fill from the logs meanwhile)."""
    cluster = cluster_factory(nodes=2, workers=1, **FAST_RESTORE)
    stream, subscribers = _load(cluster, rate=500)
    stream.start()
    time.sleep(2)
    kills = kill_worker_repeatedly(cluster, 5)
    time.sleep(2)
    finish(stream, subscribers)
    lat = subscribers.latencies()
    after = [x for k in kills for x in subscribers.latencies(since=k, until=k + 3)]
    print(f"{stream.count} events; latency p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(lat, 0.99) * 1000:.0f} ms; in the 3 s after each kill: "
          f"p50 {percentile(after, 0.5) * 1000:.0f} ms, max {max(after) * 1000:.0f} ms")
    assert max(after) < 3.0


def test_every_worker_dead_for_30_seconds(cluster_factory):
    """Every worker is dead for 30 s while the API goes on accepting 300 events/s; then one
    starts. Nothing is lost: the nodes fill from the channels' logs on their reconcile tick
    (so subscribers get the events within a couple of seconds even with no worker at all),
    and the new worker's late publishes are dropped as duplicates."""
    cluster = cluster_factory(nodes=2, workers=1, **FAST_RESTORE)
    stream, subscribers = _load(cluster, rate=300)
    stream.start()
    time.sleep(2)
    for worker in cluster.workers:  # live, and push+webhooks
        worker.kill_group(signal.SIGKILL)
    dead = time.time()
    time.sleep(30)
    cluster.replace_worker(0)  # the live one
    cluster.wait_workers()
    time.sleep(3)
    finish(stream, subscribers)
    during = subscribers.latencies(since=dead + 2, until=dead + 30)
    p50, p99 = percentile(during, 0.5), percentile(during, 0.99)
    print(f"{stream.count} events; latency with no worker: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms")
    assert p99 < 3.0, "the nodes did not fill from the log within two reconcile intervals"
