"""The channel-routed bus (gateway/ws/topics.py): a node listens to a channel's topic only
while it has local subscribers on it, and nothing published while it subscribes is lost."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from ws_harness import APP_ID, Bus, NodeThread, wait_until

from gateway.state.bus import encode_batch

V1 = {"v": 1}


def _listeners(r: redis.Redis, topic: str) -> int:
    return dict(r.pubsub_numsub(topic))[topic.encode()]


def test_a_node_listens_to_a_channels_topic_only_while_it_has_subscribers(
        node: NodeThread, client, bus: Bus, redis_client: redis.Redis) -> None:
    topic_a, topic_b = bus.keys.bus_channel(APP_ID, "a"), bus.keys.bus_channel(APP_ID, "b")
    assert _listeners(redis_client, bus.keys.bus) == 1  # control messages: always
    c, other = client(), client()
    c.subscribed("a")
    other.subscribed("a")
    assert _listeners(redis_client, topic_a) == 1  # one subscription per node, not per client
    assert _listeners(redis_client, topic_b) == 0
    bus.publish("a", "e1", "x", bus.accept("a", [("e1", "x")])[0])
    assert c.expect("e1", "a")["data"] == "x"
    c.send("pusher:unsubscribe", {"channel": "a"})
    other.close()
    wait_until(lambda: _listeners(redis_client, topic_a) == 0)
    c.subscribed("a")  # and back
    assert _listeners(redis_client, topic_a) == 1
    bus.publish("a", "e2", "y", bus.accept("a", [("e2", "y")])[0])
    assert c.expect("e2", "a")["data"] == "y"


def test_after_losing_its_bus_connection_a_node_listens_to_its_channels_again(
        client, bus: Bus, redis_client: redis.Redis) -> None:
    """Every channel's topic is subscribed again on the new connection, and what was
    accepted while the node was deaf comes from the log."""
    c = client()
    c.subscribed("x")
    c.subscribed("y")
    assert redis_client.client_kill_filter(_type="pubsub") >= 1
    (missed,) = bus.accept("x", [("missed", "m")])  # its doorbell was never rung
    for channel in ("x", "y"):
        wait_until(lambda ch=channel: _listeners(redis_client, bus.keys.bus_channel(APP_ID, ch)))
    assert c.expect("missed", "x")["data"] == "m"
    (live,) = bus.accept("y", [("live", "l")])
    bus.publish("y", "live", "l", live)
    assert c.expect("live", "y")["data"] == "l"


def test_events_on_the_shared_bus_from_older_workers_still_arrive(client, bus: Bus) -> None:
    """Upgrading (docs/architecture.md): workers of the previous version publish every
    request on ``P bus``; a node listens there too."""
    c = client()
    c.subscribed("old")
    (serial,) = bus.accept("old", [("e", "d")])
    bus.raw(encode_batch(APP_ID, [["old", "e", "d", None, serial, bus.prev("old", serial)]]))
    assert c.expect("e", "old")["data"] == "d"


def test_events_published_while_the_node_subscribes_the_topic_are_not_lost(
        node: NodeThread, client, bus: Bus, redis_client: redis.Redis) -> None:
    """A stream of events (accepted, then published on the topic, as the API and a worker
    do) while a channel's first subscriber comes and goes, over and over: every time, the
    subscriber gets every event after the position it was given, and all of them came over
    the bus, none had to be read back from the log (the node subscribed the topic before it
    read the channel's position)."""
    topic = bus.keys.bus_channel(APP_ID, "race")
    accepted: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            (serial,) = bus.accept("race", [("e", "d")])
            accepted.append(serial)
            bus.publish("race", "e", "d", serial)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        for _ in range(20):
            c = client()
            position = c.subscribed("race", clarion=V1)["serial"]
            got = [c.expect("e", "race")["serial"] for _ in range(5)]
            after = [s for s in list(accepted) if s > position]
            assert got == after[:5], (position, got, after[:8])
            c.close()
            wait_until(lambda: _listeners(redis_client, topic) == 0)
    finally:
        stop.set()
        streamer.join(5)
    assert node.node.sequencer.filled == 0
    assert node.node.sequencer.gaps == 0


def test_a_new_channels_position_is_read_after_redis_has_subscribed_its_topic(
        node: NodeThread, client, bus: Bus, redis_client: redis.Redis) -> None:
    """The order that makes the race above impossible, as Redis executed it (MONITOR), with
    the node's topic subscription held back for a while (as a busy node's would be): the
    first subscriber waits; Redis sees the SUBSCRIBE of the topic, then the read of the
    channel's serial."""
    topic, serial_key = bus.keys.bus_channel(APP_ID, "mon"), bus.keys.serial(APP_ID, "mon")
    topics = node.node.topics
    node.call(_stop_loop(topics))
    seen: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        with redis_client.monitor() as monitor:
            ready.set()
            for _ in range(10_000):
                command = monitor.next_command()["command"]
                seen.append(command)
                if serial_key in command and command.startswith("GET"):
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(5)
    c = client()
    c.subscribe("mon", clarion=V1)
    with pytest.raises(TimeoutError):
        c.recv(0.5)  # not answered: the topic is not subscribed yet
    node.call(_restart_loop(topics))
    c.expect("pusher_internal:subscription_succeeded", "mon")
    watcher.join(5)
    subscribed = [i for i, c in enumerate(seen) if c.startswith("SUBSCRIBE") and topic in c]
    read = [i for i, c in enumerate(seen) if c.startswith("GET") and serial_key in c]
    assert subscribed and read, seen[-20:]
    assert subscribed[0] < read[0]


def _stop_loop(topics):
    async def stop() -> None:
        topics.stop()
        await asyncio.sleep(0.05)  # its run() returns
    return stop


def _restart_loop(topics):
    async def restart() -> None:
        topics._stopped = False
        asyncio.get_running_loop().create_task(topics.run())
        topics._wake.set()
    return restart
