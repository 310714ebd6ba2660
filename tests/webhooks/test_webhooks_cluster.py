"""Webhooks on a real Redis Cluster (3 masters, a replica each; tests/_harness/redis_cluster.py):
the Reporter (standing for WebSocket nodes, on a cluster asyncio client), real webhooks worker
processes (leader, deliverer) on the cluster with a standalone Redis as their Celery broker,
and a real HTTP receiver on loopback. (tests/e2e/test_e2e_webhooks.py runs the real nodes on
a cluster with ``CLARION_TEST_REDIS_CLUSTER``.)

Two apps whose hash tags land on different masters: every event type arrives signed with its
app's secret, a 500 is retried until a 200 takes it, the schedule ends in a dead letter that a
replay delivers, a node that stopped heartbeating is swept (its channels vacated) even
though its record (``P whn:{node}``) is in another slot than the app's keys, a worker killed
mid-delivery while a master fails over loses nothing, and an idle leader only looks at the
apps it is woken for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pusher
import pytest
import redis
from _harness.redis_binary import redis_binary
from _harness.redis_cluster import RedisCluster

from config.settings import Settings
from gateway.state.keys import Keys
from gateway.state.redis_client import async_client, is_cluster, sync_client
from gateway.webhooks.reporter import Reporter
from gateway.webhooks.store import DEAD, DELIVERED, Store, delivery_app
from tests.webhooks.harness import ALL_EVENTS, Receiver, webhook


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One cluster for the module (3 masters, a replica each); tests isolate themselves by
    key prefix."""
    cluster = RedisCluster(
        tmp_path_factory.mktemp("rcluster"), replicas=1, binary=redis_binary()
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------- the deployment

WH = {
    "retry_schedule": [0.3, 0.3],
    "jitter": 0.0,
    "debounce": 0.5,
    "batch_window": 0.05,
    "timeout": 2.0,
    "tick": 0.05,
    "lease": 2.0,
    "allowed_networks": ["127.0.0.0/8"],
    "subscription_count_interval": 0.2,
}


def master_of(client: redis.RedisCluster, key: str) -> int:
    return int(client.get_node_from_key(key).port)


def two_apps(cluster_url: str, keys: Keys) -> tuple[str, str]:
    """Two app ids whose keys are on different masters."""
    client = redis.RedisCluster.from_url(cluster_url)
    try:
        first = "1"
        home = master_of(client, keys.wh_events_of(first))
        other = next(
            str(i) for i in range(2, 100) if master_of(client, keys.wh_events_of(str(i))) != home
        )
        return first, other
    finally:
        client.close()


def cluster_settings(
    cluster_url: str, broker_url: str, prefix: str, apps: dict[str, list[dict[str, Any]]]
) -> Settings:
    return Settings(
        redis={"url": cluster_url, "key_prefix": prefix, "cluster": True},
        broker={"url": broker_url},
        apps=[
            {"id": a, "key": f"key-{a}", "secret": f"secret-{a}", "webhooks": hooks}
            for a, hooks in apps.items()
        ],
        worker={"concurrency": 2, "visibility_timeout": 300, "restore_interval": 1},
        webhooks=WH,
        websocket={"node_timeout": 3.0},
    )


class ClusterNodes:
    """Reporters standing for WebSocket nodes, on the cluster, heartbeating in ``P nodes``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings.redis)
        self.sync = sync_client(settings.redis, "test")
        self.aredis = async_client(settings.redis, "test")
        assert is_cluster(self.sync) and is_cluster(self.aredis)
        self.reporters: dict[str, Reporter] = {}

    def node(self, node_id: str, beat_ms: int | None = None) -> Reporter:
        if node_id not in self.reporters:
            self.sync.zadd(self.keys.nodes, {node_id: beat_ms or int(time.time() * 1000)})
            self.reporters[node_id] = Reporter(self.aredis, self.keys, self.settings, node_id)
        return self.reporters[node_id]

    async def close(self) -> None:
        for r in self.reporters.values():
            await r.close()
        await self.aredis.aclose()
        self.sync.close()


def validate(app_id: str, req: Any) -> dict[str, Any]:
    sdk = pusher.Pusher(app_id=app_id, key=f"key-{app_id}", secret=f"secret-{app_id}")
    assert req.headers["x-pusher-key"] == f"key-{app_id}"
    body = sdk.validate_webhook(
        req.headers["x-pusher-key"], req.headers["x-pusher-signature"], req.body
    )
    assert body is not None, req
    return body


def wait(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    assert predicate(), f"timed out waiting for {what}"


@pytest.fixture
def deployment(
    redis_cluster: RedisCluster, redis_url: str, key_prefix: str, receiver: Receiver
) -> Any:
    """``make(extra_endpoint_for_b=None) -> (settings, app_a, app_b)``."""

    def make(**hooks: list[dict[str, Any]]) -> tuple[Settings, str, str]:
        keys = Keys(key_prefix, cluster=True)
        a, b = two_apps(redis_cluster.url, keys)
        apps = {
            a: hooks.get("a", [webhook(receiver.url("/a"), *ALL_EVENTS)]),
            b: hooks.get("b", [webhook(receiver.url("/b"), *ALL_EVENTS)]),
        }
        return cluster_settings(redis_cluster.url, redis_url, key_prefix, apps), a, b

    return make


# --------------------------------------------------------------------- tests


def test_every_event_type_of_two_apps_on_two_masters(deployment, receiver, start_worker, loop):
    settings, a, b = deployment()
    keys = Keys.of(settings.redis)
    start_worker(settings)
    nodes = ClusterNodes(settings)
    # Each app's webhook keys share the app's slot; the two apps are on different masters.
    for app in (a, b):
        slots = {
            nodes.sync.keyslot(k)
            for k in (
                keys.wh_events_of(app),
                keys.wh_due_of(app),
                keys.wh_retry_of(app),
                keys.wh_counts(app, "presence-x"),
                keys.wh_index(app, DEAD),
                keys.presence_members(app, "presence-x"),
                keys.wh_delivery("wh_0_" + app, app),
            )
        }
        assert len(slots) == 1, (app, slots)
    assert master_of(nodes.sync, keys.wh_events_of(a)) != master_of(
        nodes.sync, keys.wh_events_of(b)
    )
    node = nodes.node("A")

    async def go() -> None:
        for app in (a, b):
            node.channel_subscription_changed(app, "presence-lobby", +1)
            node.member_added(app, "presence-lobby", "alice")
            node.client_event(app, "presence-lobby", "client-typing", {"on": True}, "1.2", "alice")
            node.cache_miss(app, "cache-prices")
        await node.flush(5)
        # The node's record of its channels (another slot than the apps') came first.
        rows = nodes.sync.smembers(keys.wh_node_channels("A"))
        assert {r.decode() for r in rows} == {f"{a}\x1fpresence-lobby", f"{b}\x1fpresence-lobby"}
        await asyncio.sleep(0.6)  # subscription_count is coalesced over 0.2 s
        for app in (a, b):
            node.member_removed(app, "presence-lobby", "alice")
            node.channel_subscription_changed(app, "presence-lobby", -1)
        await node.flush(5)
        assert nodes.sync.smembers(keys.wh_node_channels("A")) == set()
        await nodes.close()

    loop.run_until_complete(go())
    for app, path in ((a, "/a"), (b, "/b")):
        assert receiver.wait_for(lambda r, p=path: len(r.events(p)) >= 8, 20), [
            (r.path, r.names) for r in receiver.requests
        ]
        names = sorted(e["name"] for e in receiver.events(path))
        assert names == sorted(
            [
                "channel_occupied",
                "member_added",
                "client_event",
                "cache_miss",
                "subscription_count",
                "subscription_count",
                "member_removed",
                "channel_vacated",
            ]
        ), (app, names)
        for req in receiver.requests:
            if req.path == path:
                validate(app, req)
                assert delivery_app(req.delivery_id) == app
    time.sleep(0.5)
    assert len(receiver.events("/a")) == len(receiver.events("/b")) == 8


def test_retry_dead_letter_and_replay(deployment, receiver, start_worker, loop):
    settings, a, b = deployment()
    answers: dict[str, list[int]] = {"/a": [500], "/b": [500, 500, 500]}

    def behaviour(req: Any) -> tuple[int, dict[str, str], bytes, float]:
        queue = answers.get(req.path, [])
        return (queue.pop(0) if queue else 200), {}, b"", 0.0

    receiver.behaviour = behaviour
    start_worker(settings)
    nodes = ClusterNodes(settings)
    node = nodes.node("A")

    async def go() -> None:
        node.client_event(a, "private-x", "client-a", "1", "1.1")
        node.client_event(b, "private-x", "client-b", "2", "1.1")
        await nodes.close()

    loop.run_until_complete(go())
    # a: 500 then 200, retried until taken.
    assert receiver.wait_for(lambda r: len(r.events("/a")) == 1, 20)
    tries_a = [r for r in receiver.requests if r.path == "/a"]
    assert [r.answered for r in tries_a] == [500, 200]
    assert len({r.delivery_id for r in tries_a}) == 1
    client = sync_client(settings.redis, "test")
    store = Store(client, Keys.of(settings.redis), settings)
    # b: 500 three times (the first attempt and the two retries of the schedule): dead.
    wait(lambda: store.counts(b)[DEAD] == 1, 20, "the dead letter")
    assert receiver.events("/b") == []
    dead = store.list(b, DEAD)
    assert len(dead) == 1 and len(dead[0].attempts) == 3
    wait(lambda: store.counts(a)[DELIVERED] == 1, 10, "a delivered")
    # A replay of b's dead letters: one more attempt, answered 200.
    assert store.replay_many(b, DEAD) == [dead[0].id]
    assert receiver.wait_for(lambda r: len(r.events("/b")) == 1, 20)
    assert receiver.events("/b")[0]["data"] == "2"
    wait(lambda: store.counts(b)[DELIVERED] == 1, 10, "b delivered")
    for req in receiver.requests:
        validate(a if req.path == "/a" else b, req)
    assert store.replay(a, dead[0].id) == "missing"  # another app's delivery
    client.close()


def test_dead_node_swept_on_cluster(deployment, receiver, start_worker, loop):
    settings, a, b = deployment()
    start_worker(settings)
    nodes = ClusterNodes(settings)
    # Node "gone" last beat long ago: the leader sweeps its counts, its channels are vacated.
    gone = nodes.node("gone", beat_ms=int(time.time() * 1000))

    async def go() -> None:
        gone.channel_subscription_changed(a, "ch-a", +1)
        gone.channel_subscription_changed(b, "ch-b", +1)
        await gone.flush(5)

    loop.run_until_complete(go())

    def occupancy(path: str) -> list[str]:
        return [
            e["name"]
            for e in receiver.events(path)
            if e["name"] in ("channel_occupied", "channel_vacated")
        ]

    assert receiver.wait_for(lambda r: len(occupancy("/a")) + len(occupancy("/b")) >= 2, 20)
    nodes.sync.zadd(Keys.of(settings.redis).nodes, {"gone": 1})  # heartbeat stopped
    assert receiver.wait_for(lambda r: len(occupancy("/a")) + len(occupancy("/b")) >= 4, 20), [
        (r.path, r.names) for r in receiver.requests
    ]
    assert occupancy("/a") == occupancy("/b") == ["channel_occupied", "channel_vacated"]
    keys = Keys.of(settings.redis)
    wait(lambda: not nodes.sync.exists(keys.wh_node_channels("gone")), 10, "node record gone")
    # The swept node's counts are gone from the apps' slots too.
    assert not nodes.sync.exists(keys.wh_counts(a, "ch-a"), keys.wh_counts(b, "ch-b"))
    loop.run_until_complete(nodes.close())


def test_worker_killed_mid_delivery_and_a_master_failed_over(
    deployment, redis_cluster, receiver, start_worker, loop
):
    """SIGKILL the worker while a POST is in flight, fail the master of app a's slot over to
    its replica, start a new worker: every event of both apps arrives, each in one delivery
    only."""
    first = {"held": False}

    def behaviour(req: Any) -> tuple[int, dict[str, str], bytes, float]:
        if not first["held"]:
            first["held"] = True
            return 200, {}, b"", 3.0  # the worker dies while waiting for this answer
        return 200, {}, b"", 0.0

    receiver.behaviour = behaviour
    settings, a, b = deployment(
        a=[webhook(receiver.url("/a"), "client_event")],
        b=[webhook(receiver.url("/b"), "client_event")],
    )
    settings = settings.model_copy(
        update={
            "webhooks": settings.webhooks.model_copy(
                update={"batch_size": 2, "timeout": 5.0, "lease": 1.0}
            )
        }
    )
    worker = start_worker(settings)
    nodes = ClusterNodes(settings)
    node = nodes.node("A")

    async def send(start: int, n: int) -> None:
        for i in range(start, start + n):
            node.client_event(a if i % 2 else b, f"ch-{i % 3}", "client-n", str(i), "1.1")
        await node.flush(30)

    loop.run_until_complete(send(0, 8))
    assert receiver.wait_for(lambda r: len(r.requests) >= 1, 15)
    worker.kill()  # mid-delivery
    keys = Keys.of(settings.redis)
    home = master_of(nodes.sync, keys.wh_events_of(a))
    assert redis_cluster.failover(home) != home  # graceful: the replica has every write
    loop.run_until_complete(send(8, 6))  # reported while no worker runs
    start_worker(settings)
    store = Store(nodes.sync, keys, settings)
    wait(
        lambda: sum(len(store.list(app, DELIVERED)) for app in (a, b)) >= 7,
        40,
        "every delivery",
    )
    time.sleep(0.5)
    data = sorted(int(e["data"]) for e in receiver.events())
    assert data == list(range(14))  # once per id: no event in two deliveries
    for req in receiver.delivered():
        validate(a if req.path == "/a" else b, req)
    loop.run_until_complete(nodes.close())


def test_idle_leader_looks_only_at_woken_apps(deployment, loop):
    """After its first look at every app, the leader serves only the apps a reporter or a
    status change woke (``P wh:wake``) and those with something due: an idle app costs
    nothing. Checked in process, with a Leader that takes the lead but starts no thread."""
    from workers.webhooks.leader import Leader

    settings, a, b = deployment()
    keys = Keys.of(settings.redis)
    client = sync_client(settings.redis, "test")
    enqueued: list[str] = []
    leader = Leader(settings, client, keys, enqueued.append)
    leader.step()  # takes the lead: every app
    assert leader.shards() == []
    nodes = ClusterNodes(settings)
    node = nodes.node("A")

    async def go() -> None:
        node.client_event(b, "private-x", "client-b", "1", "1.1")
        await nodes.close()

    loop.run_until_complete(go())
    assert leader.shards() == [b]
    assert leader.shards() == []  # a hint is taken once
    # Woken again, the leader reads b's stream and commits its delivery.
    client.zadd(keys.wh_wake, {b: 0})
    wait(lambda: leader.step() or enqueued, 5, "b's delivery")
    assert [delivery_app(i) for i in enqueued] == [b]
    # The delivery's lease in b's retry set is remembered: b is looked at when it is due.
    assert set(leader._next_look) == {b}
    leader.stop()
    client.close()


def test_delivery_ids_carry_the_app_only_on_cluster() -> None:
    from gateway.webhooks.store import new_delivery_id

    plain = new_delivery_id(1_700_000_000_000)
    assert delivery_app(plain) is None and "." not in plain
    for app in ("1", "my_app", "a:b", "x_y_z"):
        assert delivery_app(new_delivery_id(1_700_000_000_000, app)) == app
    assert delivery_app("wh_") is None and delivery_app("other_1_2") is None
    keys = Keys("p:")
    assert keys.wh_delivery(plain, "1") == f"p:whd:{plain}"  # as before, without Cluster
    assert keys.wh_due_of("1") == "p:wh:due" and keys.wh_retry_of("1") == "p:wh:retry"
    assert Keys("p:", cluster=True).wh_delivery("wh_0_1", "1") == "p:whd:{1}:wh_0_1"
