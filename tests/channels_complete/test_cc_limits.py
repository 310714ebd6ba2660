"""Per-app limits held in Redis: connections across nodes (4004), presence members (4100),
user info size (4301), client event payload and rate (4301, connection kept), REST API
requests per second (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import time

import pusher
import pytest
import redis.asyncio as aioredis
from _harness import RejectedConnection
from _harness.rest import signed_request
from cc_harness import unique

from gateway.state.connections import ConnectionCounts
from gateway.state.keys import Keys

pytestmark = pytest.mark.slow


def test_cc_max_connections_cluster_wide_4004(dep):
    # App 2 allows 3 connections: two on node 0 and one on node 1 fill it.
    a, b = dep.client(0, "2"), dep.client(0, "2")
    c = dep.client(1, "2")
    for node in (1, 0):
        with pytest.raises(RejectedConnection) as refused:
            dep.client(node, "2")
        assert refused.value.error["data"]["code"] == 4004
        assert refused.value.close_code == 4004
    # Another app is not affected.
    dep.client(1, "1").close()
    # A connection leaves: there is room again (once the node has written its count).
    a.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            d = dep.client(1, "2")
            break
        except RejectedConnection:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for client in (b, c, d):
        client.close()


def test_cc_connection_counts_ignore_and_sweep_dead_nodes(redis_server):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        keys = Keys(unique("conn") + ":")
        now_ms = int(time.time() * 1000)
        await client.zadd(keys.nodes, {"live": now_ms, "dead": now_ms - 60_000})
        live = ConnectionCounts(client, keys, "live", 10.0)
        dead = ConnectionCounts(client, keys, "dead", 10.0)
        await dead.set("9", 5)  # a dead node's connections do not count
        assert await live.admit("9", 2, max_connections=2)
        assert not await live.admit("9", 3, max_connections=2)
        await dead.sweep_node("dead")
        assert await client.hkeys(keys.connections("9")) == [b"live"]
        assert not await client.exists(keys.node_connections("dead"))
        await client.aclose()

    asyncio.run(scenario())


def test_cc_presence_member_limit_and_user_info_size(dep):
    channel = unique("presence-limited-")
    with dep.client(0, "6") as a, dep.client(1, "6") as b, dep.client(1, "6") as c:
        a.subscribe(channel, user_id="1")
        b.subscribe(channel, user_id="2")
        with pytest.raises(AssertionError) as refused:
            c.subscribe(channel, user_id="3")
        assert "'status': 4100" in str(refused.value) and "LimitReached" in str(refused.value)
        # Another tab of a member is no new member.
        c.subscribe(channel, user_id="2")
        with pytest.raises(AssertionError) as too_big:
            c.subscribe(unique("presence-big-"), user_id="4", user_info={"bio": "x" * 100})
        assert "'status': 4301" in str(too_big.value)


def test_cc_client_event_payload_and_rate_limit_4301(dep):
    channel = unique("private-limits-")
    with dep.client(0, "6") as a, dep.client(1, "6") as b:
        a.subscribe(channel)
        b.subscribe(channel)
        a.send_event("client-big", {"x": "y" * 200}, channel)
        err = a.wait_for("pusher:error")
        assert err["data"]["code"] == 4301 and "larger" in err["data"]["message"]
        # 3 per second for this app: the 4th and 5th are refused, the socket stays open.
        for i in range(5):
            a.send_event("client-n", {"i": i}, channel)
        codes = [a.wait_for("pusher:error")["data"]["code"] for _ in range(2)]
        assert codes == [4301, 4301]
        got = b.collect("client-n", channel, 3)
        assert [f["data"]["i"] for f in got] == [0, 1, 2]
        b.assert_nothing(lambda f: f.get("event") == "client-n", within=0.3)
        time.sleep(1.0)
        a.send_event("client-n", {"i": 9}, channel)
        assert b.wait_for("client-n", channel)["data"] == {"i": 9}


def test_cc_api_requests_per_second_429(dep):
    sdk = dep.sdk("5")
    responses = [signed_request(sdk, "GET", "/apps/5/channels") for _ in range(14)]
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) <= 10 and statuses.count(429) >= 4, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["code"] == 429 and "5 API requests per second" in limited.json()["error"]
    assert int(limited.headers["Retry-After"]) >= 1
    # Through the SDK too.
    with pytest.raises(pusher.errors.PusherBadStatus, match="429"):
        for _ in range(12):
            sdk.trigger(unique("rl-"), "e", "x")
    # Other apps are not limited by it.
    assert dep.sdk("1").channels_info() is not None
    time.sleep(1.1)
    assert sdk.channels_info() is not None
