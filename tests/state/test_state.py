"""Redis state against a real redis-server: serials, history, presence, occupancy, registry."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.state import occupancy, presence
from gateway.state.history import History, parse_member
from gateway.state.keys import Keys
from gateway.state.occupancy import NodeOccupancy
from gateway.state.presence import Presence
from gateway.state.registry import Registry


def test_serials_are_per_channel_increasing_and_chained(redis_client, key_prefix) -> None:
    h = History(redis_client, Keys(key_prefix), max_events=5, retention=60)
    first = h.accept("1", [("a", "e", "1", None), ("a", "e", "2", "1.1"), ("b", "e", "3", None)])
    assert first[1].serial > first[0].serial and first[1].prev == first[0].serial
    assert first[0].prev == 0 and first[2].prev == 0  # new channels
    again = h.accept("1", [("a", "e", "4", None)])
    assert again[0].serial > first[1].serial and again[0].prev == first[1].serial
    # Another app's channel of the same name has its own counter.
    other = h.accept("2", [("a", "e", "x", None)])
    assert other[0].prev == 0


@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=40))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_channel_is_one_unbroken_chain(redis_client, key_prefix, channels) -> None:
    """Whatever the interleaving of channels in requests, each channel's events form one chain
    (prev = the serial before) of growing serials, and its log holds exactly that chain."""
    keys = Keys(f"{key_prefix}{uuid.uuid4().hex[:6]}:")
    h = History(redis_client, keys, max_events=100, retention=60)
    accepted = []
    for i in range(0, len(channels), 3):
        accepted += h.accept("1", [(c, "e", str(i), None) for c in channels[i : i + 3]])
    for channel in set(channels):
        chain = [a for a in accepted if a.channel == channel]
        assert [a.prev for a in chain] == [0] + [a.serial for a in chain[:-1]]
        assert all(a.serial > a.prev for a in chain)
        logged = [parse_member(m) for m in redis_client.zrange(keys.history("1", channel), 0, -1)]
        assert [(e.serial, e.prev) for e in logged] == [(a.serial, a.prev) for a in chain]


def test_serials_follow_the_clock(redis_client, key_prefix) -> None:
    """A serial is at least the Redis time in microseconds: it says when the event was
    accepted, and serials after a lost counter still come after every earlier one."""
    keys = Keys(key_prefix)
    h = History(redis_client, keys, max_events=3, retention=60)
    seconds, micros = redis_client.time()
    before = seconds * 1_000_000 + micros
    old = h.accept("1", [("c", "e", "x", None)])[0]
    assert before <= old.serial < before + 5_000_000
    redis_client.delete(keys.serial("1", "c"))  # as if it had expired, or Redis lost it
    time.sleep(0.002)
    new = h.accept("1", [("c", "e", "y", None)])[0]
    assert new.serial > old.serial and new.prev == 0  # the chain is broken: a reader can tell


def test_a_counter_ahead_of_the_clock_keeps_counting_up(redis_client, key_prefix) -> None:
    """A counter past Redis' clock (a clock that went back, a restored Redis) is followed by
    one, not by the clock: serials never go back, the chain stays linked, the TTL is renewed."""
    keys = Keys(key_prefix)
    h = History(redis_client, keys, max_events=5, retention=60)
    seconds, micros = redis_client.time()
    ahead = (seconds + 3600) * 1_000_000 + micros
    redis_client.set(keys.serial("1", "c"), ahead, ex=5)
    first, second = h.accept("1", [("c", "e", "x", None), ("c", "e", "y", None)])
    assert (first.prev, first.serial) == (ahead, ahead + 1)
    assert (second.prev, second.serial) == (ahead + 1, ahead + 2)
    assert int(redis_client.get(keys.serial("1", "c"))) == ahead + 2
    assert redis_client.ttl(keys.serial("1", "c")) > 60
    logged = [parse_member(m) for m in redis_client.zrange(keys.history("1", "c"), 0, -1)]
    assert [(e.serial, e.prev) for e in logged] == [(ahead + 1, ahead), (ahead + 2, ahead + 1)]


def test_log_is_capped_ordered_and_expires(redis_client, key_prefix) -> None:
    keys = Keys(key_prefix)
    h = History(redis_client, keys, max_events=3, retention=60)
    accepted = [h.accept("1", [("c", "e", str(i), None)])[0] for i in range(6)]
    parsed = [parse_member(m) for m in redis_client.zrange(keys.history("1", "c"), 0, -1)]
    assert [e.serial for e in parsed] == [a.serial for a in accepted[-3:]]
    assert [e.data for e in parsed] == ["3", "4", "5"]
    assert 0 < redis_client.ttl(keys.history("1", "c")) <= 60
    assert redis_client.ttl(keys.serial("1", "c")) > 60  # the counter outlives the log


def test_log_keeps_events_for_the_retention_time_only(redis_client, key_prefix) -> None:
    keys = Keys(key_prefix)
    h = History(redis_client, keys, max_events=100, retention=1)
    h.accept("1", [("c", "e", "old", None)])
    time.sleep(1.1)
    h.accept("1", [("c", "e", "new", None)])
    logged = [parse_member(m) for m in redis_client.zrange(keys.history("1", "c"), 0, -1)]
    assert [e.data for e in logged] == ["new"]


def test_members_from_before_chained_serials_are_read(redis_client) -> None:
    old = parse_member(b'1700000000000005 {"e":"ev","d":"x","x":null}')
    assert (old.serial, old.prev, old.event, old.data) == (1700000000000005, 1700000000000004,
                                                           "ev", "x")


def test_history_since(redis_client, redis_url, key_prefix) -> None:
    keys = Keys(key_prefix)
    accepted = History(redis_client, keys, 10, 60).accept(
        "1", [("c", "e", str(i), None) for i in range(5)])

    async def read():
        client = aioredis.from_url(redis_url)
        h = History(client, keys, 10, 60)
        try:
            return (await h.current_serial("1", "c"),
                    await h.since("1", "c", accepted[0].serial, accepted[2].serial),
                    await h.since("1", "c", accepted[0].serial, limit=3),
                    await h.current_serial("1", "none"))
        finally:
            await client.aclose()

    current, between, page, none = asyncio.run(read())
    assert current == accepted[-1].serial
    assert [e.data for e in between] == ["1", "2"]
    assert [e.data for e in page] == ["1", "2", "3"]
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
