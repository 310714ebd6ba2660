"""Cluster-wide judgement of occupancy and presence, with Reporters standing for WebSocket
nodes on a real Redis. The leader's scheduler runs in-process and events are read straight
from the stream, so debounce timing is driven by the test clock, not by sleeping."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis.asyncio

from gateway.state.presence import Presence
from gateway.webhooks.store import now_ms
from tests.webhooks.conftest import Nodes
from tests.webhooks.harness import ALL_EVENTS, make_settings, webhook
from workers.webhooks.leader import Leader

LATER = 60_000  # ms: past any debounce


@pytest.fixture
def settings(redis_url, key_prefix):
    return make_settings(redis_url, key_prefix, [
        webhook("http://127.0.0.1:9/all", *ALL_EVENTS),
    ], debounce=3.0)


@pytest.fixture
def nodes(settings, loop):
    n = Nodes(settings)
    yield n
    loop.run_until_complete(n.close())


@pytest.fixture
def leader(settings, redis_client):
    from gateway.state.keys import Keys

    return Leader(settings, redis_client, Keys(settings.redis.key_prefix), lambda i: None)


def emitted(redis_client, settings) -> list[dict]:
    from gateway.state.keys import Keys

    rows = redis_client.xrange(Keys(settings.redis.key_prefix).wh_events)
    return [orjson.loads(f[b"e"]) for _id, f in rows]


def names(redis_client, settings) -> list[tuple[str, str]]:
    return [(e["name"], e["channel"]) for e in emitted(redis_client, settings)
            if e["name"] in ("channel_occupied", "channel_vacated")]


def test_one_occupied_and_one_vacated_across_two_nodes(nodes, leader, loop, redis_client,
                                                       settings):
    a, b = nodes.node("A"), nodes.node("B")

    async def go():
        a.channel_subscription_changed("1", "room", +1)
        await nodes.flush()
        b.channel_subscription_changed("1", "room", +1)
        b.channel_subscription_changed("1", "room", +1)
        await nodes.flush()
        a.channel_subscription_changed("1", "room", -1)  # B still has two
        await nodes.flush()
        leader.run_due_transitions(now_ms() + LATER)
        assert names(redis_client, settings) == [("channel_occupied", "room")]
        b.channel_subscription_changed("1", "room", -1)
        b.channel_subscription_changed("1", "room", -1)
        await nodes.flush()
        leader.run_due_transitions(now_ms() + 100)  # not due yet: debounced
        assert names(redis_client, settings) == [("channel_occupied", "room")]
        leader.run_due_transitions(now_ms() + LATER)
        leader.run_due_transitions(now_ms() + LATER)  # a second scheduler pass adds nothing

    loop.run_until_complete(go())
    assert names(redis_client, settings) == [("channel_occupied", "room"),
                                             ("channel_vacated", "room")]


def test_reload_within_the_debounce_emits_nothing(nodes, leader, loop, redis_client, settings):
    a, b = nodes.node("A"), nodes.node("B")

    async def go():
        a.channel_subscription_changed("1", "room", +1)
        await nodes.flush()
        a.channel_subscription_changed("1", "room", -1)  # page reload: leaves on A...
        await nodes.flush()
        b.channel_subscription_changed("1", "room", +1)  # ...comes back on B
        await nodes.flush()
        leader.run_due_transitions(now_ms() + LATER)

    loop.run_until_complete(go())
    assert names(redis_client, settings) == [("channel_occupied", "room")]


def test_concurrent_first_subscribers_on_many_nodes_make_one_occupied(
    nodes, leader, loop, redis_client, settings
):
    reporters = [nodes.node(f"N{i}") for i in range(12)]

    async def go():
        for rnd in range(5):  # five real transitions, each raced by 12 nodes
            for r in reporters:
                r.channel_subscription_changed("1", "busy", +1)
            await asyncio.gather(*(r.flush(5) for r in reporters))
            for r in reporters:
                r.channel_subscription_changed("1", "busy", -1)
            await asyncio.gather(*(r.flush(5) for r in reporters))
            leader.run_due_transitions(now_ms() + LATER * (rnd + 1))

    loop.run_until_complete(go())
    assert names(redis_client, settings) == [("channel_occupied", "busy"),
                                             ("channel_vacated", "busy")] * 5


def test_dead_node_is_swept_and_its_channels_vacated(nodes, leader, loop, redis_client,
                                                     settings):
    a, b = nodes.node("A"), nodes.node("B")

    async def go():
        a.channel_subscription_changed("1", "only-a", +1)
        a.channel_subscription_changed("1", "shared", +1)
        b.channel_subscription_changed("1", "shared", +1)
        await nodes.flush()

    loop.run_until_complete(go())
    assert leader.sweep_dead_nodes() == []
    nodes.heartbeat("A", at_ms=now_ms() - 60_000)  # A stopped heartbeating
    assert leader.sweep_dead_nodes() == ["A"]
    leader.run_due_transitions(now_ms() + LATER)
    assert sorted(names(redis_client, settings)) == [
        ("channel_occupied", "only-a"), ("channel_occupied", "shared"),
        ("channel_vacated", "only-a")]


def test_presence_member_by_user_id_across_nodes(nodes, leader, loop, redis_client, settings):
    """The node decides joins/leaves with gateway/state/presence.py, as the WebSocket node
    does; one user on two nodes is one member; a quick rejoin emits nothing."""
    keys = nodes.keys
    aredis = nodes.aredis
    pa, pb = Presence(aredis, keys, "A"), Presence(aredis, keys, "B")
    ra, rb = nodes.node("A"), nodes.node("B")
    ch = "presence-room"

    async def join(p, r, socket, user):
        res = await p.join("1", ch, socket, user, {"n": user}, 100)
        if res.is_new:
            r.member_added("1", ch, user)
        await r.flush(5)

    async def leave(p, r, socket):
        user = await p.leave("1", ch, socket)
        if user is not None:
            r.member_removed("1", ch, user)
        await r.flush(5)

    async def go():
        await join(pa, ra, "1.1", "alice")
        await join(pb, rb, "2.1", "alice")  # second tab on another node: same member
        await join(pb, rb, "2.2", "bob")
        await leave(pa, ra, "1.1")  # alice still on B
        leader.run_due_transitions(now_ms() + LATER)
        await leave(pb, rb, "2.2")  # bob leaves...
        await join(pa, ra, "1.2", "bob")  # ...and reloads within the debounce
        leader.run_due_transitions(now_ms() + LATER)
        await leave(pb, rb, "2.1")  # alice gone for good
        leader.run_due_transitions(now_ms() + 100)
        mid = [(e["name"], e["user_id"]) for e in emitted(redis_client, settings)
               if e["name"].startswith("member")]
        assert mid == [("member_added", "alice"), ("member_added", "bob")]
        leader.run_due_transitions(now_ms() + LATER)

    loop.run_until_complete(go())
    got = [(e["name"], e["user_id"]) for e in emitted(redis_client, settings)
           if e["name"].startswith("member")]
    assert got == [("member_added", "alice"), ("member_added", "bob"),
                   ("member_removed", "alice")]


def test_subscription_count_is_coalesced(nodes, leader, loop, redis_client, settings):
    a, b = nodes.node("A"), nodes.node("B")

    async def go():
        for _ in range(5):
            a.channel_subscription_changed("1", "counted", +1)
        b.channel_subscription_changed("1", "counted", +1)
        await nodes.flush()
        leader.run_due_transitions(now_ms() + LATER)
        leader.run_due_transitions(now_ms() + LATER)
        a.channel_subscription_changed("1", "counted", -1)
        await nodes.flush()
        leader.run_due_transitions(now_ms() + 2 * LATER)

    loop.run_until_complete(go())
    counts = [e["subscription_count"] for e in emitted(redis_client, settings)
              if e["name"] == "subscription_count"]
    assert counts == [6, 5]


def test_reports_are_dropped_when_no_webhook_wants_them(redis_url, key_prefix, loop,
                                                        redis_client):
    settings = make_settings(redis_url, key_prefix, [
        webhook("http://127.0.0.1:9/x", "client_event", channel_prefix="private-")])
    nodes = Nodes(settings)
    r = nodes.node("A")

    async def go():
        r.channel_subscription_changed("1", "room", +1)
        r.member_added("1", "presence-x", "u")
        r.cache_miss("1", "cache-x")
        r.client_event("1", "room", "client-a", "{}", "1.1")  # filtered by prefix
        r.client_event("1", "private-room", "client-a", "{}", "1.1")
        await nodes.flush()
        await nodes.close()

    loop.run_until_complete(go())
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}*")]
    assert sorted(k.removeprefix(key_prefix) for k in keys) == ["nodes", "wh:events"]
    assert [e["channel"] for e in emitted(redis_client, settings)] == ["private-room"]


def test_reporter_survives_redis_errors_and_resyncs(settings, loop, redis_client, leader,
                                                    redis_url):
    """Writes that fail are kept and retried; counts are absolute so a retry cannot double."""
    nodes = Nodes(settings)
    r = nodes.node("A")
    real = r.redis

    class Flaky:
        fails = 2

        def pipeline(self, **kw):
            if Flaky.fails:
                Flaky.fails -= 1
                raise redis.exceptions.ConnectionError("down")
            return real.pipeline(**kw)

        def __getattr__(self, name):
            return getattr(real, name)

    r.redis = Flaky()

    async def go():
        r.channel_subscription_changed("1", "room", +1)
        r.channel_subscription_changed("1", "room", +1)
        await r.flush(10)
        await nodes.close()

    t = time.monotonic()
    loop.run_until_complete(go())
    assert time.monotonic() - t < 5
    assert redis_client.hget(nodes.keys.wh_counts("1", "room"), "A") == b"2"
    assert names(redis_client, settings) == [("channel_occupied", "room")]
