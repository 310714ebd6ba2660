"""Subscription counts: pusher_internal:subscription_count with the cluster-wide count to the
channel's subscribers on both nodes (apps that enable it), never for presence channels,
throttled for channels above 100 subscribers; subscription_count in channel info."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from _harness.client import data_of
from cc_harness import unique

from gateway.state.keys import Keys
from gateway.ws import subcount
from gateway.ws.subcount import SubscriptionCounter

pytestmark = pytest.mark.slow

EVENT = "pusher_internal:subscription_count"


def next_count(client, channel: str, want: int, timeout: float = 5.0) -> None:
    """Counts arrive as subscriptions change; wait until ``want`` is reported."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        frame = client.wait_for(EVENT, channel, timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(frame["data"], str)
        n = data_of(frame)["subscription_count"]
        seen.append(n)
        if n == want:
            return
        assert time.monotonic() < deadline, seen


def test_cc_subscription_count_cluster_wide(dep):
    sdk = dep.sdk()
    channel = unique("counted-")
    with dep.client(0) as a, dep.client(1) as b, dep.client(1) as c:
        a.subscribe(channel)
        next_count(a, channel, 1)
        b.subscribe(channel)
        c.subscribe(channel)
        for client in (a, b, c):
            next_count(client, channel, 3)
        assert sdk.channel_info(channel, ["subscription_count"]) == {
            "occupied": True, "subscription_count": 3}
        c.unsubscribe(channel)
        for client in (a, b):
            next_count(client, channel, 2)
        listed = sdk.channels_info(attributes=["subscription_count"])["channels"]
        assert listed[channel] == {"subscription_count": 2}
        # #server-to-user- channels are neither listed nor counted.
        assert not [n for n in listed if n.startswith("#")]


def test_cc_no_subscription_count_for_presence_or_when_disabled(dep):
    presence = unique("presence-counted-")
    plain = unique("uncounted-")
    with dep.client(0) as a, dep.client(1) as b, dep.client(0, app_id="5") as d:
        a.subscribe(presence, user_id="1")
        b.subscribe(presence, user_id="2")
        d.subscribe(plain)
        a.wait_for("pusher_internal:member_added", presence)
        a.assert_nothing(lambda f: f.get("event") == EVENT, within=0.7)
        d.assert_nothing(lambda f: f.get("event") == EVENT, within=0.1)


def test_cc_subscription_count_throttled_above_100(redis_server, monkeypatch):
    monkeypatch.setattr(subcount, "BIG_CHANNEL_INTERVAL", 0.6)

    async def scenario() -> list[int]:
        client = aioredis.Redis.from_url(redis_server.url)
        keys = Keys(unique("sct") + ":")
        sent: list[int] = []
        counter = SubscriptionCounter(
            client, keys, 10.0, lambda app: True,
            lambda ev: sent.append(int(ev.data.split(":")[1].rstrip("}"))),
        )
        task = asyncio.get_running_loop().create_task(counter.run())
        now_ms = int(time.time() * 1000)
        await client.zadd(keys.nodes, {"n1": now_ms, "n2": now_ms})
        for n in (150, 151, 152, 153):  # four changes within the interval
            await client.hset(keys.occupancy("1", "n1"), "big", n - 50)
            await client.hset(keys.occupancy("1", "n2"), "big", 50)
            counter.written([("1", "big")])
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the slot expires: the last count is sent once more
        # Small channels are not throttled.
        for n in (3, 4):
            await client.hset(keys.occupancy("1", "n1"), "small", n)
            counter.written([("1", "small")])
            await asyncio.sleep(0.05)
        counter.stop()
        await task
        await client.aclose()
        return sent

    assert asyncio.run(scenario()) == [150, 153, 3, 4]
