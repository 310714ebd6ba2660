"""Redis state against a real redis-server: serials, history, presence, occupancy, registry."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from gateway.state import occupancy, presence
from gateway.state.history import History, parse_member
from gateway.state.keys import Keys
from gateway.state.occupancy import NodeOccupancy
from gateway.state.presence import Presence
from gateway.state.registry import Registry


def test_serials_are_per_channel_and_increasing(redis_client, key_prefix) -> None:
    h = History(redis_client, Keys(key_prefix), size=5, ttl=60)
    first = h.accept("1", [("a", "e", "1", None), ("a", "e", "2", "1.1"), ("b", "e", "3", None)])
    assert first[1].serial == first[0].serial + 1
    again = h.accept("1", [("a", "e", "4", None)])
    assert again[0].serial == first[1].serial + 1
    # Another app's channel of the same name has its own counter.
    other = h.accept("2", [("a", "e", "x", None)])
    assert other[0].serial != again[0].serial + 1 or other[0].serial > 0


def test_history_is_capped_and_ordered(redis_client, key_prefix) -> None:
    keys = Keys(key_prefix)
    h = History(redis_client, keys, size=3, ttl=60)
    accepted = [h.accept("1", [("c", "e", str(i), None)])[0] for i in range(6)]
    members = redis_client.zrange(keys.history("1", "c"), 0, -1)
    parsed = [parse_member(m) for m in members]
    assert [s for s, _ in parsed] == [a.serial for a in accepted[-3:]]
    assert [e["d"] for _, e in parsed] == ["3", "4", "5"]
    assert redis_client.ttl(keys.history("1", "c")) > 0


def test_serial_restarts_above_old_values_after_expiry(redis_client, key_prefix) -> None:
    keys = Keys(key_prefix)
    h = History(redis_client, keys, size=3, ttl=60)
    old = h.accept("1", [("c", "e", "x", None)])[0].serial
    redis_client.delete(keys.serial("1", "c"))  # as if it had expired
    time.sleep(0.002)
    assert h.accept("1", [("c", "e", "y", None)])[0].serial > old


def test_history_since(redis_client, redis_url, key_prefix) -> None:
    keys = Keys(key_prefix)
    accepted = History(redis_client, keys, 10, 60).accept(
        "1", [("c", "e", str(i), None) for i in range(5)])

    async def read():
        client = aioredis.from_url(redis_url)
        h = History(client, keys, 10, 60)
        try:
            return (await h.current_serial("1", "c"),
                    await h.since("1", "c", accepted[0].serial, accepted[3].serial),
                    await h.current_serial("1", "none"))
        finally:
            await client.aclose()

    current, between, none = asyncio.run(read())
    assert current == accepted[-1].serial
    assert [e["d"] for _, e in between] == ["1", "2"]
    assert none == 0


def test_presence_counts_users_not_connections(redis_client, redis_url, key_prefix) -> None:
    keys = Keys(key_prefix)

    async def scenario():
        client = aioredis.from_url(redis_url)
        node_a, node_b = Presence(client, keys, "a"), Presence(client, keys, "b")
        try:
            r1 = await node_a.join("1", "presence-x", "1.1", "u1", {"n": 1}, 100)
            r2 = await node_b.join("1", "presence-x", "2.1", "u1", {"n": 1}, 100)
            again = await node_b.join("1", "presence-x", "2.1", "u1", {"n": 1}, 100)
            r3 = await node_b.join("1", "presence-x", "2.2", "u2", None, 2)
            full = await node_b.join("1", "presence-x", "2.3", "u3", None, 2)
            counts = (presence.user_count(redis_client, keys, "1", "presence-x"),
                      presence.user_ids(redis_client, keys, "1", "presence-x"))
            left_first_tab = await node_a.leave("1", "presence-x", "1.1")
            left_unknown = await node_a.leave("1", "presence-x", "9.9")
            left_last_tab = await node_b.leave("1", "presence-x", "2.1")
            return r1, r2, again, r3, full, counts, left_first_tab, left_unknown, left_last_tab
        finally:
            await client.aclose()

    r1, r2, again, r3, full, counts, first, unknown, last = asyncio.run(scenario())
    assert r1.is_new and r1.members == {"u1": {"n": 1}}
    assert not r2.is_new and not again.is_new
    assert r3.is_new and r3.members == {"u1": {"n": 1}, "u2": None}
    assert full.full
    assert counts == (2, ["u1", "u2"])
    assert (first, unknown, last) == (None, None, "u1")
    assert presence.user_ids(redis_client, keys, "1", "presence-x") == ["u2"]


def test_occupancy_adds_live_nodes_only(redis_client, redis_url, key_prefix) -> None:
    keys = Keys(key_prefix)

    async def scenario():
        client = aioredis.from_url(redis_url)
        try:
            for node, count in (("a", 2), ("b", 3), ("dead", 5)):
                await NodeOccupancy(client, keys, node).set("1", "ch", count)
            await NodeOccupancy(client, keys, "a").set("1", "other", 1)
            await NodeOccupancy(client, keys, "a").set("1", "other", 0)
            await Registry(client, keys, "a", 10).heartbeat()
            await Registry(client, keys, "b", 10).heartbeat()
            await client.zadd(keys.nodes, {"dead": int((time.time() - 60) * 1000)})
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert occupancy.subscription_counts(redis_client, keys, "1", 10) == {"ch": 5}
    assert occupancy.subscription_count(redis_client, keys, "1", "ch", 10) == 5
    assert occupancy.subscription_count(redis_client, keys, "1", "none", 10) == 0


def test_survivor_sweeps_a_dead_node(redis_client, redis_url, key_prefix) -> None:
    keys = Keys(key_prefix)
    removed: list[tuple[str, str, str]] = []

    async def scenario():
        client = aioredis.from_url(redis_url)
        try:
            dead, alive = Presence(client, keys, "dead"), Presence(client, keys, "alive")
            await dead.join("1", "presence-x", "1.1", "u1", None, 100)
            await dead.join("1", "presence-x", "1.2", "u2", None, 100)
            await alive.join("1", "presence-x", "2.1", "u2", None, 100)  # u2 is also elsewhere
            await NodeOccupancy(client, keys, "dead").set("1", "presence-x", 2)
            await client.zadd(keys.nodes, {"dead": int((time.time() - 60) * 1000)})
            survivor = Registry(client, keys, "alive", node_timeout=10)
            await survivor.heartbeat()

            async def on_removed(app_id: str, channel: str, user_id: str) -> None:
                removed.append((app_id, channel, user_id))

            swept = await survivor.sweep(alive, on_removed)
            swept_again = await survivor.sweep(alive, on_removed)
            return swept, swept_again
        finally:
            await client.aclose()

    swept, swept_again = asyncio.run(scenario())
    assert swept == ["dead"] and swept_again == []
    assert removed == [("1", "presence-x", "u1")]
    assert presence.user_ids(redis_client, keys, "1", "presence-x") == ["u2"]
    assert not redis_client.exists(keys.occupancy("1", "dead"), keys.node_presence("dead"))
    assert redis_client.zscore(keys.nodes, "dead") is None
