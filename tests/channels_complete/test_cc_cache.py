"""Cache channels: the last API event replayed to new subscribers on every node, or
pusher:cache_miss; client events never cached; a TTL; info=cache; older serials never win."""

from __future__ import annotations

import json
import time

import pytest
import redis
from _harness.client import data_of
from cc_harness import CACHE_TTL, unique

from gateway.state.cache import ChannelCache
from gateway.state.keys import Keys

pytestmark = pytest.mark.slow


def first_after_success(client, channel, **kw):
    """subscription_succeeded, then the very next frame on the channel."""
    client.subscribe(channel, **kw)
    return client.wait_for(lambda f: f.get("channel") == channel)


def test_cc_cache_miss_then_last_event_on_both_nodes(dep):
    sdk = dep.sdk()
    channel = unique("cache-news-")
    with dep.client(0) as a:
        assert first_after_success(a, channel) == {"event": "pusher:cache_miss",
                                                   "channel": channel}
        sdk.trigger(channel, "first", {"n": 1})
        sdk.trigger(channel, "second", {"n": 2})
        assert data_of(a.wait_for("second", channel)) == {"n": 2}
    for node in (0, 1):
        with dep.client(node) as b:
            frame = first_after_success(b, channel)
            assert frame["event"] == "second" and data_of(frame) == {"n": 2}, frame
            # Exactly once: the replay is not followed by the same event live.
            b.assert_nothing(lambda f: f.get("event") in ("second", "first"), within=0.5)


def test_cc_cache_channel_kinds(dep):
    sdk = dep.sdk()
    private, presence = unique("private-cache-"), unique("presence-cache-")
    encrypted = unique("private-encrypted-cache-")
    sdk.trigger(private, "p", "private-data")
    sdk.trigger(presence, "q", "presence-data")
    sdk.trigger(encrypted, "e", {"secret": 1})
    time.sleep(0.5)  # the worker stores as it publishes
    with dep.client(1) as c:
        assert first_after_success(c, private)["data"] == "private-data"
        frame = first_after_success(c, presence, user_id="u1")
        assert frame == {"event": "q", "channel": presence, "data": "presence-data"}
        frame = first_after_success(c, encrypted)
        # Relayed byte for byte: the SDK's {"nonce", "ciphertext"}.
        assert set(json.loads(frame["data"])) == {"nonce", "ciphertext"}


def test_cc_client_events_are_not_cached(dep):
    channel = unique("private-cache-chat-")
    with dep.client(0) as a, dep.client(1) as b:
        a.subscribe(channel)
        assert a.wait_for("pusher:cache_miss", channel)
        b.subscribe(channel)
        assert b.wait_for("pusher:cache_miss", channel)
        a.send_event("client-typing", {"x": 1}, channel)
        assert b.wait_for("client-typing", channel)["data"] == {"x": 1}
    with dep.client(1) as c:
        assert first_after_success(c, channel)["event"] == "pusher:cache_miss"


def test_cc_cache_info_and_ttl(dep):
    sdk = dep.sdk()
    channel = unique("cache-info-")
    assert sdk.channel_info(channel, ["cache"]) == {"occupied": False, "cache": None}
    sdk.trigger(channel, "ev", "payload")
    deadline = time.monotonic() + 5
    while (info := sdk.channel_info(channel, ["cache"]))["cache"] is None:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert info["cache"]["data"] == "payload"
    assert 0 < info["cache"]["ttl"] <= CACHE_TTL
    # Not a cache channel: null.
    assert sdk.channel_info(unique("plain-"), ["cache"])["cache"] is None
    # After the TTL the cache is empty again.
    time.sleep(CACHE_TTL + 0.5)
    assert sdk.channel_info(channel, ["cache"])["cache"] is None
    with dep.client(0) as a:
        assert first_after_success(a, channel)["event"] == "pusher:cache_miss"


def test_cc_cache_older_serial_never_overwrites(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(unique("ccache") + ":")
    cache = ChannelCache(client, keys, 60)

    def store(serial: int, event: str) -> None:
        pipe = client.pipeline(transaction=False)
        cache.store_in(pipe, "1", "cache-x", serial, event, f"d{serial}")
        pipe.execute()

    store(5, "five")
    store(3, "three")  # a late task: ignored
    store(5, "five-again")  # a redelivered one: ignored
    assert cache.info("1", "cache-x")["data"] == "d5"
    assert client.hget(keys.cache("1", "cache-x"), "e") == b"five"
    store(6, "six")
    assert cache.info("1", "cache-x")["data"] == "d6"
    assert 0 < client.ttl(keys.cache("1", "cache-x")) <= 60
    client.close()


def test_cc_cache_default_ttl_is_30_minutes():
    from config.settings import Settings

    assert Settings().cache.ttl == 1800
