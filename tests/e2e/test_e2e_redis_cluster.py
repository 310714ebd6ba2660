"""A deployment on Redis Cluster (``[redis] cluster = true``; 3 masters with one replica each,
tests/_harness/redis_cluster.py) and a standalone Redis as the Celery broker, at load: three
apps whose hash slots lie on three different masters, numbered events at 300 events/s in all
over 20 channels through the official SDK, subscribers on two nodes that follow positions, and
a probe per app that times raw API requests.

- A slot moved online (``redis-cli --cluster reshard``'s steps) while its app publishes, then a
  graceful ``CLUSTER FAILOVER`` of another app's master: nothing accepted lost or reported lost,
  nothing twice, the order kept, clients connected, the API answering 200 (or 503 with
  Retry-After, never a hang).
- An app's master SIGKILLed (cluster-require-full-coverage no): its replica takes over within
  seconds; every event answered 200 is delivered or reported lost by the log's chain (never
  silently skipped), including with the replica cut off for a second before the kill (a
  certain loss) and with the app store's master killed; the other apps are never refused.

Figures printed: seconds of 503/unavailability per app, events lost and reported, time to the
first delivery after each fault, the longest delivery gap, when delivery is live again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pusher
import pytest
from _harness import Cluster
from _harness.load import (
    Probe,
    Stream,
    Subscribers,
    live_again,
    missing,
    percentile,
    reported_lost,
    verdict,
)
from _harness.redis_cluster import RedisCluster

pytestmark = [pytest.mark.slow, pytest.mark.fault]

RATE = 300
CHANNELS = 20


# --------------------------------------------------------------------------- apps and load


@dataclass
class App:
    """One app of the deployment: its credentials, its slot's master, its load."""

    id: str
    channels: list[str]
    cluster: Cluster | None = None
    stream: Stream | None = None
    subscribers: Subscribers | None = None
    probe: Probe | None = None

    @property
    def key(self) -> str:
        return f"key-{self.id}"

    @property
    def secret(self) -> str:
        return f"secret-{self.id}"

    def settings(self) -> dict[str, str]:
        return {"id": self.id, "key": self.key, "secret": self.secret}

    def pusher(self, **options: Any) -> pusher.Pusher:
        """The SDK for this app (what ``Stream`` asks its deployment for)."""
        assert self.cluster is not None
        kwargs: dict[str, Any] = dict(
            app_id=self.id,
            key=self.key,
            secret=self.secret,
            host="127.0.0.1",
            port=self.cluster.api_port,
            ssl=False,
            timeout=10,
        )
        kwargs.update(options)
        return pusher.Pusher(**kwargs)


def _apps_on_distinct_masters(rc: RedisCluster) -> list[App]:
    """Three app ids whose hash tag ``{id}`` lies on three different masters."""
    chosen: dict[int, str] = {}
    for n in range(1, 200):
        master = rc.master_of_slot(rc.slot_of(f"{{{n}}}"))
        chosen.setdefault(master, str(n))
        if len(chosen) == 3:
            break
    ids = sorted(chosen.values(), key=int)
    names = [f"seq-{i}" for i in range(CHANNELS)]
    return [App(app_id, names[i::3]) for i, app_id in enumerate(ids)]


def _deploy(rc: RedisCluster, broker_url: str, cluster_factory) -> tuple[Cluster, list[App]]:
    apps = _apps_on_distinct_masters(rc)
    cluster = cluster_factory(
        redis_url=rc.url,
        redis={"url": rc.url, "cluster": True},
        broker={"url": broker_url},
        apps=[a.settings() for a in apps],
        nodes=2,
        workers=1,
        worker={"concurrency": 2, "visibility_timeout": 5, "restore_interval": 1},
    )
    for app in apps:
        app.cluster = cluster
        urls = [cluster.ws_url(i, key=app.key) for i in range(2)]
        app.subscribers = Subscribers(urls, app.channels, per_node=2, positions=True).start()
        app.stream = Stream(app, app.channels, RATE / len(apps), threads=2)  # type: ignore[arg-type]
        app.probe = Probe(app.pusher, app.id)
    return cluster, apps


def _first_delivery_after(subscribers: Subscribers, t: float) -> float:
    """Seconds from ``t`` to the receipt of the first event published after ``t``."""
    return (
        min(
            (at for r in subscribers.conns for at, lat in r.latencies if at - lat >= t),
            default=float("inf"),
        )
        - t
    )


def _longest_gap(subscribers: Subscribers, since: float, until: float) -> float:
    """The longest time a subscriber went without an event between ``since`` and ``until``
    (the stream never pauses: a gap is the fault as the clients saw it)."""
    gaps = []
    for r in subscribers.conns:
        times = sorted(at for at, _ in r.latencies if since <= at < until)
        gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
    return max(gaps, default=float("inf"))


def _start(apps: list[App]) -> None:
    for app in apps:
        assert app.stream and app.probe
        app.stream.start()
        app.probe.start()


def _finish(apps: list[App], *, allow_reported: bool) -> tuple[list[str], dict[str, Any]]:
    """Stop the load, wait for the subscribers to catch up; the problems and per-app counts."""
    for app in apps:
        assert app.stream and app.probe
        app.probe.stop()
        app.stream.stop()
    problems: list[str] = []
    counts: dict[str, Any] = {}
    for app in apps:
        assert app.stream and app.subscribers and app.probe
        app.subscribers.wait_for(app.stream.accepted, 30)
        app.subscribers.stop()
        found = verdict(app.subscribers, app.stream, allow_reported=allow_reported)
        problems += [f"app {app.id}: {p}" for p in found] + app.probe.problems()
        conns = app.subscribers.conns
        counts[app.id] = {
            "accepted": app.stream.count,
            "sdk_refused": len(app.stream.refused),
            "missing": max(
                sum(len(v) for v in missing(r, app.stream.accepted).values()) for r in conns
            ),
            "reported_lost": max(
                sum(len(v) for v in reported_lost(r, app.stream.accepted).values()) for r in conns
            ),
            "loss_reports": max(sum(len(v) for v in r.reports.values()) for r in conns),
        }
    return problems, counts


def _master_of(rc: RedisCluster, app: App) -> int:
    return rc.master_of_slot(rc.slot_of(f"{{{app.id}}}"))


# --------------------------------------------------------------------------- tests


def test_slot_migration_then_graceful_failover_lose_nothing(
    redis_cluster, dedicated_redis, cluster_factory
):
    rc = redis_cluster
    cluster, apps = _deploy(rc, dedicated_redis.url, cluster_factory)
    moved_app, failed_app = apps[1], apps[2]
    _start(apps)
    time.sleep(3)

    # (a) The slot of one app moved to the master of another, one key at a time with pauses
    # so that it stays half moved for seconds under the stream: a script whose keys are on
    # both sides meanwhile gets TRYAGAIN.
    t_mig = time.time()
    target = _master_of(rc, apps[0])
    keys = rc.migrate_slot(rc.slot_of(f"{{{moved_app.id}}}"), target, batch=1, pause=0.1)
    t_mig_done = time.time()
    assert _master_of(rc, moved_app) == target
    # Long enough to see live delivery come back (the measure looks for it until the end).
    time.sleep(8)

    # (b) Another app's master replaced by its replica (CLUSTER FAILOVER: nothing lost).
    t_fo = time.time()
    old = _master_of(rc, failed_app)
    new = rc.failover(old)
    t_fo_done = time.time()
    time.sleep(12)
    cluster.wait_workers(30)

    problems, counts = _finish(apps, allow_reported=False)
    assert moved_app.subscribers and moved_app.probe and failed_app.subscribers
    assert failed_app.probe
    figures = {
        "migration_s": round(t_mig_done - t_mig, 2),
        "keys_moved": keys,
        "migration_unavailable_s": round(moved_app.probe.unavailable(t_mig, t_mig_done + 2), 2),
        "migration_refused": moved_app.probe.refused(t_mig, t_mig_done + 2),
        "migration_first_delivery_s": round(_first_delivery_after(moved_app.subscribers, t_mig), 3),
        "failover_s": round(t_fo_done - t_fo, 2),
        "failover_unavailable_s": round(failed_app.probe.unavailable(t_fo, t_fo_done + 3), 2),
        "failover_refused": failed_app.probe.refused(t_fo, t_fo_done + 3),
        "failover_first_delivery_s": round(_first_delivery_after(failed_app.subscribers, t_fo), 3),
        "migration_longest_gap_s": round(
            _longest_gap(moved_app.subscribers, t_mig - 1, t_mig_done + 3), 3
        ),
        "failover_longest_gap_s": round(
            _longest_gap(failed_app.subscribers, t_fo - 1, t_fo_done + 3), 3
        ),
        "migration_live_again_s": round(live_again(moved_app.subscribers, t_mig_done), 2),
        "failover_live_again_s": round(live_again(failed_app.subscribers, t_fo_done), 2),
        "p50_latency_after": round(
            percentile(failed_app.subscribers.latencies(since=t_fo_done + 2), 0.5), 3
        ),
    }
    print(f"redis cluster migration + graceful failover ({old} -> {new}): {figures}; {counts}")
    assert not problems, "\n".join(problems[:20])
    for app_id, c in counts.items():
        assert c["missing"] == 0 and c["loss_reports"] == 0, (app_id, c)
        assert c["accepted"] > 0, (app_id, c)
    cluster.assert_alive()
    assert figures["migration_first_delivery_s"] < 5
    assert figures["failover_first_delivery_s"] < 10
    assert figures["migration_live_again_s"] < 10 and figures["failover_live_again_s"] < 10


# Redis's default (yes) stops every slot while one is uncovered; with "no" the apps of the
# other masters go on while the killed master's replica takes over.
def _app_store_master(rc: RedisCluster, cluster: Cluster) -> int:
    """The master of the app store hash (``<prefix>apps``: no app's tag), which the API reads
    again every second whatever app a request is for."""
    return rc.master_of_slot(rc.slot_of(cluster.settings.redis.key_prefix + "apps"))


# lag: the replica cut off 1 s before the kill, so that a second of accepted events dies with
# the master for certain; what the subscribers miss must be reported lost, never skipped.
# app_store_too: the victim app's master also holds the app store, which every API request
# depends on (where that key lands is chance otherwise: a deployment's key prefix is random).
@pytest.mark.parametrize("redis_cluster", [{"full_coverage": False}], indirect=True)
@pytest.mark.parametrize(
    ("lag", "app_store_too"),
    [(0.0, False), (1.0, False), (0.0, True)],
    ids=["kill", "kill-lagging-replica", "kill-app-store-master"],
)
def test_master_sigkilled_loses_only_what_is_reported(
    redis_cluster, dedicated_redis, cluster_factory, lag, app_store_too
):
    rc = redis_cluster
    cluster, apps = _deploy(rc, dedicated_redis.url, cluster_factory)
    store = _app_store_master(rc, cluster)
    victim = next(a for a in reversed(apps) if (_master_of(rc, a) == store) == app_store_too)
    _start(apps)
    time.sleep(3)
    t0 = time.time()
    old = _master_of(rc, victim)
    new = rc.failover(old, kill=True, lag=lag)
    promoted = time.time()
    # Long enough after the promotion for a few reconcile rounds: then delivery must be live.
    time.sleep(9)
    cluster.wait_workers(30)

    problems, counts = _finish(apps, allow_reported=True)
    assert victim.subscribers and victim.probe
    others = [a for a in apps if a is not victim]
    figures = {
        "promotion_s": round(promoted - t0, 2),
        "unavailable_s": round(victim.probe.unavailable(t0, promoted + 5), 2),
        "refused": victim.probe.refused(t0, promoted + 5),
        "others_refused": sum(a.probe.refused(t0, promoted + 5) for a in others if a.probe),
        "first_delivery_s": round(_first_delivery_after(victim.subscribers, t0), 3),
        "longest_gap_s": round(_longest_gap(victim.subscribers, t0 - 1, promoted + 5), 3),
        "others_longest_gap_s": round(
            max(_longest_gap(a.subscribers, t0 - 1, promoted + 5) for a in others if a.subscribers),
            3,
        ),
        "first_delivery_after_promotion_s": round(
            _first_delivery_after(victim.subscribers, promoted), 3
        ),
        "live_again_after_promotion_s": round(live_again(victim.subscribers, promoted), 2),
        "p50_latency_after": round(
            percentile(victim.subscribers.latencies(since=promoted + 5), 0.5), 3
        ),
        "others_p50_latency_after": round(
            percentile(
                [
                    x
                    for a in others
                    if a.subscribers
                    for x in a.subscribers.latencies(since=promoted + 5)
                ],
                0.5,
            ),
            3,
        ),
    }
    print(
        f"redis cluster master SIGKILL, lag {lag} s, app store on it: {app_store_too} "
        f"({old} -> {new}): {figures}; {counts}"
    )
    assert not problems, "\n".join(problems[:20]) + "\n" + rc.logs(800)
    # Whatever is missing, the node said so: verdict(allow_reported) above found no event
    # missing outside a hole the node reported.
    # With lag, the events of that second are gone from Redis; subscribers miss those the
    # workers had not delivered live before the kill (most runs: 80-100 of them), and each one
    # missed must lie in a reported hole (verdict above). Not asserted > 0: when every one
    # had been delivered live, nothing is missing.
    # cluster-require-full-coverage no: the other apps' masters never stopped serving.
    assert figures["others_refused"] == 0, figures
    cluster.assert_alive()
    assert figures["first_delivery_after_promotion_s"] < 10
    assert figures["live_again_after_promotion_s"] < 10
    assert figures["p50_latency_after"] < 0.2
