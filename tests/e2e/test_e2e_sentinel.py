"""A deployment on Redis Sentinel (1 master, 1 replica, 3 sentinels: tests/_harness/sentinel.py)
through a master failover, at load: numbered events through the official SDK at 300 events/s,
subscribers on two nodes that follow positions (so that a loss is reported to them), and a
probe that times raw API requests.

- The master SIGKILLed: the API answers 200 or 503 with Retry-After, never hangs; clients stay
  connected; events flow again within seconds of the new master; every event answered 200 is
  delivered or reported lost by the log's chain (docs/reliability.md, "Redis Sentinel").
- A graceful ``SENTINEL FAILOVER``: nothing accepted is lost, nothing reported lost.
"""

from __future__ import annotations

import time

import pytest
from _harness import APP_ID, Cluster
from _harness.load import Probe, Stream, Subscribers, live_again, percentile, reported_lost, verdict
from _harness.sentinel import SentinelGroup

from gateway.processes import wait_workers_ready

pytestmark = [pytest.mark.slow, pytest.mark.fault]

CHANNELS = [f"seq-{i}" for i in range(20)]
RATE = 300


def _deployment(group: SentinelGroup, cluster_factory) -> tuple[Cluster, Stream, Subscribers,
                                                                 Probe]:
    cluster = cluster_factory(
        redis=group.redis_settings(), nodes=2, workers=1,
        worker={"concurrency": 2, "visibility_timeout": 5, "restore_interval": 1})
    urls = [cluster.ws_url(i) for i in range(2)]
    subscribers = Subscribers(urls, CHANNELS, per_node=2, positions=True).start()
    return cluster, Stream(cluster, CHANNELS, RATE), subscribers, Probe(cluster.pusher, APP_ID)


def _first_delivery_after(subscribers: Subscribers, t: float) -> float:
    """When the first event published after ``t`` was received (unix time)."""
    return min((at for r in subscribers.conns for at, lat in r.latencies if at - lat >= t),
               default=float("inf"))


def _run_failover(group: SentinelGroup, cluster_factory, fault) -> dict[str, float]:
    cluster, stream, subscribers, probe = _deployment(group, cluster_factory)
    stream.start()
    probe.start()
    time.sleep(3)
    t0 = time.time()
    old = fault()
    group.wait_for_new_master(old)
    switched = time.time()
    wait_workers_ready(cluster.settings, cluster.workers, timeout=30)
    workers_back = time.time()
    time.sleep(6)
    probe.stop()
    stream.stop()
    subscribers.wait_for(stream.accepted, 20)
    subscribers.stop()
    figures = {
        "sentinels": switched - t0,
        # Until the API answers 200 again after its last refusal.
        "api": probe.first_ok_after(max((a[0] for a in probe.answers
                                         if a[0] >= t0 and a[1] != 200), default=t0)) - t0,
        "workers_live": switched - t0 + live_again(subscribers, switched),
        "workers_ping": workers_back - t0,
        "delivery": _first_delivery_after(subscribers, t0 + 0.001) - t0,
        "refused": sum(1 for a in probe.answers if a[0] >= t0 and a[1] != 200),
        "accepted": stream.count,
        "reported_lost": max(sum(len(v) for v in reported_lost(r, stream.accepted).values())
                             for r in subscribers.conns),
        "reports": max(sum(len(v) for v in r.reports.values()) for r in subscribers.conns),
        "after_p50": percentile(subscribers.latencies(since=t0 + 8), 0.5),
    }
    print(f"failover figures: {figures}; {len(stream.refused)} SDK requests refused")
    problems = verdict(subscribers, stream, allow_reported=True) + probe.problems()
    assert not problems, "\n".join(problems[:20]) + "\n" + group.logs()
    cluster.assert_alive()
    assert figures["delivery"] < 10, "events did not flow again within 10 s"
    assert figures["after_p50"] < 0.2, "delivery did not become live again"
    return figures


def test_master_sigkilled_at_300_events_per_second(sentinel_group, cluster_factory):
    figures = _run_failover(sentinel_group, cluster_factory, sentinel_group.kill_master)
    assert figures["refused"] > 0, "the master was dead for seconds but nothing was refused"


def test_graceful_failover_loses_nothing(sentinel_group, cluster_factory):
    figures = _run_failover(sentinel_group, cluster_factory, sentinel_group.failover)
    assert figures["reported_lost"] == 0 and figures["reports"] == 0, figures
