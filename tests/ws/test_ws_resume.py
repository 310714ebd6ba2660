"""Resume after reconnect on one node (docs/resume.md): positions on frames, the missed events
replayed from the log in order and once, and ``clarion:resume_failed`` when the log cannot
give them all."""

from __future__ import annotations

import json
import threading

from ws_harness import APP_ID, Bus, PusherClient

V1 = {"v": 1}


def _resume(serial: int, socket_id: str | None = None) -> dict:
    return {"v": 1, "serial": serial, **({"socket_id": socket_id} if socket_id else {})}


def _events(c: PusherClient, n: int, timeout: float = 5) -> list[dict]:
    return [c.recv(timeout) for _ in range(n)]


def _publish_all(bus: Bus, channel: str, names: list[str]) -> list[int]:
    serials = bus.accept(channel, [(name, name) for name in names])
    for name, serial in zip(names, serials, strict=True):
        bus.publish(channel, name, name, serial)
    return serials


def test_positions_are_given_only_to_subscriptions_that_ask(client, bus: Bus) -> None:
    (before,) = _publish_all(bus, "pos", ["e0"])
    plain, tracked = client(), client()
    plain_ok = plain.subscribed("pos")
    tracked_ok = tracked.subscribed("pos", clarion=V1)
    assert "serial" not in plain_ok and tracked_ok["serial"] == before
    (s1,) = _publish_all(bus, "pos", ["e1"])
    assert plain.recv() == {"event": "e1", "channel": "pos", "data": "e1"}
    assert tracked.recv() == {"event": "e1", "channel": "pos", "data": "e1", "serial": s1}


def test_resume_replays_exactly_the_missed_events_then_goes_live(client, bus: Bus) -> None:
    first = client()
    position = first.subscribed("room", clarion=V1)["serial"]
    (s1,) = _publish_all(bus, "room", ["e1"])
    assert first.recv()["serial"] == s1
    first.close()  # the connection drops; events go on meanwhile
    s2, s3 = _publish_all(bus, "room", ["e2", "e3"])
    assert position < s1 < s2 < s3

    again = client()
    ok = again.subscribed("room", clarion=_resume(s1, first.socket_id))
    assert ok["serial"] == s1
    assert [(m["event"], m["serial"]) for m in _events(again, 2)] == [("e2", s2), ("e3", s3)]
    bus.publish("room", "e3", "e3", s3)  # a late copy from a slow worker
    (s4,) = _publish_all(bus, "room", ["e4"])
    assert again.recv()["serial"] == s4


def test_resume_with_nothing_missed_replays_nothing(client, bus: Bus) -> None:
    c = client()
    (s1,) = _publish_all(bus, "calm", ["e1"])
    ok = c.subscribed("calm", clarion=_resume(s1))
    assert ok["serial"] == s1
    (s2,) = _publish_all(bus, "calm", ["e2"])
    assert c.recv()["serial"] == s2


def test_resume_while_events_keep_coming_misses_and_repeats_nothing(
    client, redis_client, key_prefix: str
) -> None:
    """Another subscriber keeps the channel live on the node; 1,200 events were missed (three
    pages) and more are published while the replay runs: the resumer gets every one, once,
    in order."""
    bus = Bus(redis_client, key_prefix, max_events=2000)
    watcher = client()
    watcher.subscribed("busy")
    (start,) = _publish_all(bus, "busy", ["e0"])
    watcher.recv()
    serials = _publish_all(bus, "busy", [f"e{i}" for i in range(1, 1201)])
    more: list[int] = []
    stop = threading.Event()

    def keep_publishing() -> None:
        i = 1201
        while not stop.is_set() and i < 1400:
            more.extend(_publish_all(bus, "busy", [f"e{i}"]))
            i += 1

    thread = threading.Thread(target=keep_publishing)
    thread.start()
    resumer = client()
    resumer.subscribed("busy", clarion=_resume(start))
    thread.join()
    stop.set()
    wanted = serials + more
    got = [resumer.recv() for _ in range(len(wanted))]
    assert [m.get("serial") for m in got] == wanted
    (last,) = _publish_all(bus, "busy", ["end"])
    assert resumer.recv()["serial"] == last


def test_events_the_old_connection_sent_are_not_replayed_to_it(client, bus: Bus) -> None:
    c = client()
    (s0,) = _publish_all(bus, "mine", ["e0"])
    old = "123.456"
    (s1,) = bus.accept("mine", [("own", "x")], exclude=old)
    (s2,) = bus.accept("mine", [("other", "y")])
    c.subscribed("mine", clarion=_resume(s0, old))
    assert c.recv()["event"] == "other"
    assert s1 < s2


def test_events_gone_from_the_log_are_signalled_not_skipped(start_node, redis_client,
                                                           key_prefix: str) -> None:
    node = start_node(history={"max_events": 5})
    bus = Bus(redis_client, key_prefix, max_events=5)
    (s0,) = bus.accept("short", [("e0", "0")])
    serials = bus.accept("short", [(f"e{i}", str(i)) for i in range(1, 12)])
    c = PusherClient(node.url)
    c.established()
    ok = c.subscribed("short", clarion=_resume(s0))
    assert ok["serial"] == serials[-1]
    failed = c.expect("clarion:resume_failed", "short")
    assert json.loads(failed["data"]) == {"reason": "expired", "serial": s0}
    (s12,) = _publish_all(bus, "short", ["e12"])
    assert c.recv() == {"event": "e12", "channel": "short", "data": "e12", "serial": s12}
    c.close()


def test_a_lost_log_is_signalled_as_reset(client, bus: Bus, redis_client) -> None:
    (s1,) = bus.accept("gone", [("e1", "1")])
    redis_client.delete(bus.keys.serial(APP_ID, "gone"), bus.keys.history(APP_ID, "gone"))
    c = client()
    ok = c.subscribed("gone", clarion=_resume(s1))
    assert ok["serial"] == 0
    assert json.loads(c.expect("clarion:resume_failed")["data"])["reason"] == "reset"
    # Events after the reset start a new chain; the subscriber follows it.
    (s2,) = _publish_all(bus, "gone", ["e2"])
    assert c.recv()["serial"] == s2


def test_a_node_behind_the_client_catches_up_before_replaying(client, bus: Bus) -> None:
    """The client had s2 from a node further ahead; this node has only delivered s1 (the
    doorbell for s2 has not come): it catches up from the log and replays nothing twice."""
    watcher = client()
    watcher.subscribed("lag")
    (s1,) = _publish_all(bus, "lag", ["e1"])
    watcher.recv()
    (s2,) = bus.accept("lag", [("e2", "2")])  # accepted, not published yet
    c = client()
    assert c.subscribed("lag", clarion=_resume(s2))["serial"] == s2
    (s3,) = _publish_all(bus, "lag", ["e3"])
    assert c.recv()["serial"] == s3
    assert [watcher.recv()["event"] for _ in range(2)] == ["e2", "e3"]


def test_a_long_replay_of_big_events_is_paced_not_cut_off(start_node, redis_client,
                                                          key_prefix: str) -> None:
    """300 events of 5 KB (1.5 MB) to a subscriber whose cut-off is 64 KB: replayed as it
    reads, never cut off as a slow subscriber."""
    node = start_node(max_write_buffer_bytes=64 * 1024, history={"max_events": 1000})
    bus = Bus(redis_client, key_prefix, max_events=1000)
    (s0,) = bus.accept("big", [("e", "start")])
    payload = "x" * 5000
    serials = bus.accept("big", [("e", payload)] * 300)
    c = PusherClient(node.url)
    c.established()
    c.subscribed("big", clarion=_resume(s0))
    assert [c.recv()["serial"] for _ in range(300)] == serials
    c.close()


def test_cache_channel_resumed_does_not_get_its_cached_event_again(client, bus: Bus,
                                                                   redis_client) -> None:
    c = client()
    (s1,) = _publish_all(bus, "cache-quotes", ["q1"])
    redis_client.hset(bus.keys.cache(APP_ID, "cache-quotes"), mapping={"s": s1, "e": "q1",
                                                                        "d": "q1"})
    c.subscribed("cache-quotes", clarion=_resume(s1))
    (s2,) = _publish_all(bus, "cache-quotes", ["q2"])
    assert c.recv()["serial"] == s2  # no replay of q1 first
    fresh = client()
    fresh.subscribed("cache-quotes", clarion=V1)
    cached = fresh.recv()  # a fresh subscription gets the cached event, without a position
    assert cached["event"] == "q1" and "serial" not in cached


def test_bad_resume_requests(client, bus: Bus) -> None:
    c = client()
    c.subscribe("bad", clarion={"v": 1, "serial": "12"})
    assert c.expect("pusher:error")["data"]["message"].startswith("Invalid message format")
    c.subscribe("bad", clarion={"v": 1, "serial": 1, "socket_id": "nope"})
    assert "socket_id" in c.expect("pusher:error")["data"]["message"]
    ok = c.subscribed("bad", clarion={"v": 2, "serial": 1})  # another version: a plain one
    assert "serial" not in ok


def test_resume_of_a_channel_that_never_had_an_event(client) -> None:
    c = client()
    assert c.subscribed("empty", clarion=_resume(0))["serial"] == 0
    c.ws.ping()  # nothing else was sent: no resume_failed
    c.send("pusher:ping", {})
    assert c.recv()["event"] == "pusher:pong"


def test_subscribers_following_positions_are_told_of_a_gap_the_node_finds(client, bus: Bus,
                                                                          redis_client) -> None:
    """The node itself finds events lost on a live channel (Redis lost the log): subscribers
    that follow positions get clarion:resume_failed before the next event; plain ones only
    the event."""
    tracked, plain = client(), client()
    tracked.subscribed("wiped", clarion=V1)
    plain.subscribed("wiped")
    (s1,) = _publish_all(bus, "wiped", ["e1"])
    assert tracked.recv()["serial"] == s1 and plain.recv()["event"] == "e1"
    redis_client.delete(bus.keys.serial(APP_ID, "wiped"), bus.keys.history(APP_ID, "wiped"))
    (s2,) = _publish_all(bus, "wiped", ["e2"])
    failed = tracked.expect("clarion:resume_failed", "wiped")
    assert json.loads(failed["data"]) == {"reason": "reset", "serial": s1}
    assert tracked.recv()["serial"] == s2
    assert plain.recv() == {"event": "e2", "channel": "wiped", "data": "e2"}


def test_subscribers_arriving_during_the_first_ones_baseline_read_wait_for_it(
    start_node, redis_client, key_prefix: str
) -> None:
    """Ten clients resume from 0 on a channel new to the node at the same moment: the first
    reads the channel's position; the others must not take the channel's initial 0 for it
    (they would be told they missed nothing)."""
    node = start_node()
    bus = Bus(redis_client, key_prefix)
    serials = bus.accept("quiet", [(f"e{i}", str(i)) for i in range(5)])
    clients = []
    for _ in range(10):
        c = PusherClient(node.url)
        c.established()
        clients.append(c)
    for c in clients:
        c.subscribe("quiet", clarion=_resume(0))
    for c in clients:
        assert c.expect("pusher_internal:subscription_succeeded", "quiet")["serial"] == 0
        assert [c.recv()["serial"] for _ in range(5)] == serials
    for c in clients:
        c.close()
