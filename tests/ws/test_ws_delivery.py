"""Fan-out from the bus: ordering by serial with gap filling, duplicates, exclusion, client
events, terminate, slow subscribers, and two nodes sharing one Redis."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request

import pytest
from ws_harness import APP_ID, KEY, Bus, PusherClient, wait_until

from gateway.protocol.signatures import auth_token, channel_string
from gateway.state.bus import BusEvent, Terminate, encode_batch

MARKER = "marker"


def publish_marker(bus: Bus, channel: str) -> None:
    """A serial-less event: whatever arrives before it was delivered before it."""
    bus.publish(channel, MARKER, "{}")


def test_bus_event_delivered_with_data_untouched(client, bus: Bus) -> None:
    c = client()
    c.subscribed("news")
    bus.publish("news", "App\\Events\\Posted", '{"id": 1, "t":"x"}')
    msg = c.expect("App\\Events\\Posted", "news")
    assert msg["data"] == '{"id": 1, "t":"x"}'


def test_encrypted_payload_relayed_byte_for_byte(client, bus: Bus) -> None:
    c = client()
    c.subscribe_private("private-encrypted-vault")
    payload = json.dumps({"nonce": base64.b64encode(b"n" * 24).decode(),
                          "ciphertext": base64.b64encode(b"\x00secret\xff").decode()})
    bus.publish("private-encrypted-vault", "secret", payload)
    raw = c.ws.recv(5)
    assert json.loads(raw)["data"] == payload


def test_out_of_order_serials_are_delivered_in_order(client, bus: Bus) -> None:
    (before,) = bus.accept("ordered", [("e0", "0")])
    c = client()
    c.subscribed("ordered")
    s1, s2, s3 = bus.accept("ordered", [("e1", "1"), ("e2", "2"), ("e3", "3")])
    assert before < s1 < s2 < s3
    # Worker B publishes e3 first: the node fills e1, e2 from history, then e3.
    bus.publish("ordered", "e3", "3", s3)
    bus.publish("ordered", "e1", "1", s1)  # late duplicates from worker A
    bus.publish("ordered", "e2", "2", s2)
    publish_marker(bus, "ordered")
    got = [c.recv()["event"] for _ in range(4)]
    assert got == ["e1", "e2", "e3", MARKER]


def test_batch_message_delivered_event_by_event(client, bus: Bus) -> None:
    """A ``b`` message (one API request's events, as the live worker publishes them) reaches
    each channel's subscribers in serial order, leaving out the excluded socket; a malformed
    batch is dropped whole and the node carries on."""
    c, other = client(), client()
    c.subscribed("batch-a")
    c.subscribed("batch-b")
    other.subscribed("batch-a")
    s1, s2 = bus.accept("batch-a", [("a1", "1"), ("a2", "2")])
    (t1,) = bus.accept("batch-b", [("b1", "x")])
    bus.raw(b'{"t": "b", "a": "' + APP_ID.encode() + b'", "ev": [["batch-a"]]}')
    bus.raw(encode_batch(APP_ID, [
        ["batch-a", "a1", "1", None, s1, bus.prev("batch-a", s1)],
        ["batch-b", "b1", "x", None, t1, bus.prev("batch-b", t1)],
        ["batch-a", "a2", "2", other.socket_id, s2, s1],
    ]))
    got = [(m["channel"], m["event"]) for m in (c.recv() for _ in range(3))]
    assert sorted(got) == [("batch-a", "a1"), ("batch-a", "a2"), ("batch-b", "b1")]
    assert got.index(("batch-a", "a1")) < got.index(("batch-a", "a2"))
    assert other.recv()["event"] == "a1"
    publish_marker(bus, "batch-a")
    assert other.recv()["event"] == MARKER  # a2 left out for the socket that sent it


def test_gap_in_the_middle(client, bus: Bus) -> None:
    c = client()
    c.subscribed("gappy")
    serials = bus.accept("gappy", [(f"e{i}", str(i)) for i in range(5)])
    bus.publish("gappy", "e0", "0", serials[0])
    bus.publish("gappy", "e4", "4", serials[4])
    assert [c.recv()["event"] for _ in range(5)] == ["e0", "e1", "e2", "e3", "e4"]


def test_a_gap_of_any_length_is_filled_from_the_log(start_node, redis_client,
                                                    key_prefix: str) -> None:
    """Only the last of 2,500 accepted events comes on the bus (every task before it was
    lost): the node reads the rest from the log, page by page, and delivers all in order."""
    node = start_node(history={"max_events": 10_000})
    bus = Bus(redis_client, key_prefix, max_events=10_000)
    c = PusherClient(node.url)
    c.established()
    c.subscribed("long")
    serials = bus.accept("long", [("e", str(i)) for i in range(2500)])
    bus.publish("long", "e", "2499", serials[-1])
    assert [c.recv(10)["data"] for _ in range(2500)] == [str(i) for i in range(2500)]
    assert node.node.sequencer.gaps == 0
    assert node.node.sequencer.filled == 2499
    c.close()


def test_events_trimmed_from_the_log_are_reported_not_waited_for(
    start_node, redis_client, key_prefix: str
) -> None:
    """A burst bigger than the log's cap: the events trimmed before any worker published them
    are gone. The node delivers what the log still has, in order, says that the chain broke,
    and later copies of the trimmed ones are dropped (delivering them now would reorder)."""
    node = start_node(history={"max_events": 5})
    bus = Bus(redis_client, key_prefix, max_events=5)
    c = PusherClient(node.url)
    c.established()
    c.subscribed("burst")
    serials = bus.accept("burst", [(f"e{i}", str(i)) for i in range(12)])
    bus.publish("burst", "e11", "11", serials[11])
    assert [c.recv()["event"] for _ in range(5)] == [f"e{i}" for i in range(7, 12)]
    assert node.node.sequencer.gaps == 1
    for i in (0, 1, 8):
        bus.publish("burst", f"e{i}", str(i), serials[i])
    publish_marker(bus, "burst")
    assert c.recv()["event"] == MARKER
    c.close()


def test_a_lost_log_is_detected_not_mistaken_for_nothing_missed(node, client, bus: Bus,
                                                                redis_client) -> None:
    """Redis loses the channel's counter and log (flushed, or replaced by an empty one): the
    next event's chain starts from nothing, so the node reports the gap (it cannot know what
    it missed) and still delivers the event."""
    c = client()
    c.subscribed("wiped")
    (s1,) = bus.accept("wiped", [("before", "1")])
    bus.publish("wiped", "before", "1", s1)
    assert c.recv()["event"] == "before"
    redis_client.delete(bus.keys.serial(APP_ID, "wiped"), bus.keys.history(APP_ID, "wiped"))
    (s2,) = bus.accept("wiped", [("after", "2")])
    assert s2 > s1 and bus.prev("wiped", s2) == 0
    bus.publish("wiped", "after", "2", s2)
    assert c.recv()["event"] == "after"
    ready = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{node.settings.websocket.port}/ready", timeout=5).read())
    assert ready["delivery"]["gaps"] == 1


def test_accepted_but_never_published_arrives_on_the_reconcile_tick(start_node, redis_client,
                                                                     key_prefix: str) -> None:
    """No worker ever publishes (every one is down): the node's reconcile tick finds the log
    ahead of what it delivered and fills from it within two intervals."""
    node = start_node(reconcile_interval=0.2)
    bus = Bus(redis_client, key_prefix)
    c = PusherClient(node.url)
    c.established()
    c.subscribed("quiet")
    bus.accept("quiet", [("a", "1"), ("b", "2")])
    assert [c.recv(3)["event"] for _ in range(2)] == ["a", "b"]
    c.close()


def test_duplicates_dropped(client, bus: Bus) -> None:
    c = client()
    c.subscribed("dups")
    s1, s2 = bus.accept("dups", [("a", "1"), ("b", "2")])
    for serial, event in [(s1, "a"), (s1, "a"), (s2, "b"), (s1, "a"), (s2, "b")]:
        bus.publish("dups", event, "x", serial)
    publish_marker(bus, "dups")
    assert [c.recv()["event"] for _ in range(3)] == ["a", "b", MARKER]


def test_events_before_subscribing_are_not_replayed(client, bus: Bus) -> None:
    (s1,) = bus.accept("late", [("old", "1")])
    c = client()
    c.subscribed("late")
    bus.publish("late", "old", "1", s1)  # a slow worker publishes it after we subscribed
    (s2,) = bus.accept("late", [("new", "2")])
    bus.publish("late", "new", "2", s2)
    assert c.recv()["event"] == "new"


def test_excluded_socket_does_not_get_its_own_event(client, bus: Bus) -> None:
    a, b = client(), client()
    a.subscribed("room")
    b.subscribed("room")
    (serial,) = bus.accept("room", [("said", "hi")], exclude=a.socket_id)
    bus.publish("room", "said", "hi", serial, exclude=a.socket_id)
    publish_marker(bus, "room")
    assert b.recv()["event"] == "said"
    assert a.recv()["event"] == MARKER


def test_other_channels_and_apps_are_not_delivered(client, bus: Bus) -> None:
    c = client()
    c.subscribed("mine")
    bus.publish("other", "nope", "{}")
    bus.publish("mine", "nope", "{}", app_id="3")
    bus.raw(b"not json at all")
    bus.raw(b'{"t":"future-kind"}')
    publish_marker(bus, "mine")
    assert c.recv()["event"] == MARKER


def test_server_to_user_delivery(client, bus: Bus) -> None:
    c = client()
    c.signin('{"id":"42"}')
    c.expect("pusher:signin_success")
    c.subscribed("#server-to-user-42")
    bus.publish("#server-to-user-42", "notice", '{"n":1}')
    assert c.expect("notice", "#server-to-user-42")["data"] == '{"n":1}'


def test_server_to_user_delivery_needs_no_subscription(node, client, bus: Bus) -> None:
    """Signing in joins the user's channel: events sent to the user arrive without the client
    subscribing to it (pusher-js does not), and the channel goes when the connection does."""
    c = client()
    c.signin('{"id":"43"}')
    c.expect("pusher:signin_success")
    bus.publish("#server-to-user-43", "notice", '{"n":2}')
    assert c.expect("notice", "#server-to-user-43")["data"] == '{"n":2}'
    c.close()
    wait_until(lambda: (APP_ID, "#server-to-user-43") not in node.node.hub.channels)


# --------------------------------------------------------------------------- client events


def test_client_event_on_private_channel(client) -> None:
    a, b = client(), client()
    a.subscribe_private("private-chat")
    b.subscribe_private("private-chat")
    a.send("client-typing", {"who": "a"}, channel="private-chat")
    msg = b.expect("client-typing", "private-chat")
    assert msg["data"] == {"who": "a"}
    assert "user_id" not in msg
    # not echoed to the sender: the next thing the sender sees is b's event
    b.send("client-typing", {"who": "b"}, channel="private-chat")
    assert a.expect("client-typing", "private-chat")["data"] == {"who": "b"}


def test_client_event_on_presence_carries_user_id(client) -> None:
    a, b = client(), client()
    a.subscribe_presence("presence-chat", 7)
    b.subscribe_presence("presence-chat", 8)
    a.expect("pusher_internal:member_added")
    b.send("client-hello", "text", channel="presence-chat")
    msg = a.expect("client-hello", "presence-chat")
    assert msg["user_id"] == "8" and msg["data"] == "text"


@pytest.mark.parametrize("channel", ["public-room", "private-encrypted-x", "private-unjoined"])
def test_client_event_refusals_keep_connection(client, channel: str) -> None:
    c = client()
    if channel == "public-room":
        c.subscribed(channel)
    elif channel.startswith("private-encrypted"):
        c.subscribe_private(channel)
    c.send("client-x", {}, channel=channel)
    err = c.expect("pusher:error")
    assert err["data"]["code"] == 4301
    c.send("pusher:ping", {})
    c.expect("pusher:pong")


def test_client_events_disabled_for_app(node) -> None:
    c = PusherClient(node.url, key="quiet-key")
    c.established()
    c.subscribed("private-q", auth=auth_token("quiet-key", "s3",
                                              channel_string(c.socket_id, "private-q")))
    c.send("client-x", {}, channel="private-q")
    assert c.expect("pusher:error")["data"]["code"] == 4301
    c.close()


def test_client_event_rate_limit(client) -> None:
    a, b = client(), client()
    a.subscribe_private("private-fast")
    b.subscribe_private("private-fast")
    for i in range(15):
        a.send("client-n", i, channel="private-fast")
    errors = [a.expect("pusher:error")["data"]["code"] for _ in range(5)]
    assert errors == [4301] * 5
    got = [b.expect("client-n")["data"] for _ in range(10)]
    assert got == list(range(10))


# --------------------------------------------------------------------------- terminate


def test_terminate_closes_the_users_connections(client, bus: Bus) -> None:
    tab1, tab2, other = client(), client(), client()
    for c, uid in [(tab1, "42"), (tab2, "42"), (other, "43")]:
        c.signin(json.dumps({"id": uid}))
        c.expect("pusher:signin_success")
    bus.raw(Terminate(APP_ID, "42").encode())
    for c in (tab1, tab2):
        err = c.expect("pusher:error")
        assert err["data"] == {"code": 4009, "message": "You got disconnected by the app."}
        assert c.closed().code == 4009
    other.send("pusher:ping", {})
    other.expect("pusher:pong")


# --------------------------------------------------------------------------- slow subscribers


def test_slow_subscriber_is_cut_off_without_slowing_others(start_node, bus: Bus) -> None:
    node = start_node(max_write_buffer_bytes=256 * 1024)
    port = node.settings.websocket.port
    # A subscriber that never reads: a raw socket with a tiny receive buffer.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.sendall((f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": "firehose"}}).encode()
    slow.sendall(bytes([0x81, 0x80 | len(sub), 0, 0, 0, 0]) + sub)  # masked with a zero key
    fast = PusherClient(node.url)
    fast.established()
    fast.subscribed("firehose")
    wait_until(lambda: node.node.hub.local_count(APP_ID, "firehose") == 2)

    def cut_off() -> bool:
        return any(c.closing for c in list(node.node.hub.connections.values()))

    # Rounds of 100 KB that a reading client absorbs easily, until the slow one's backlog
    # (kernel buffers, which loopback autotunes to megabytes, then ours) passes the cap.
    payload = "x" * 4000
    sent = 0
    topic = bus.keys.bus_channel(APP_ID, "firehose")
    for _ in range(300):
        pipe = bus.redis.pipeline(transaction=False)
        for i in range(sent, sent + 25):
            pipe.publish(topic, BusEvent(APP_ID, "firehose", f"e{i}", payload).encode())
        pipe.execute()
        for i in range(sent, sent + 25):
            assert fast.expect(f"e{i}")["data"] == payload
        sent += 25
        if cut_off():
            break
    assert cut_off()
    # It got 4100 (unreadable behind its backlog) and is aborted soon after.
    wait_until(lambda: node.node.connections == 1, timeout=10)
    assert node.node.hub.local_count(APP_ID, "firehose") == 1
    slow.close()
    fast.close()


# --------------------------------------------------------------------------- two nodes


def test_two_nodes_share_presence_and_client_events(start_node) -> None:
    n1, n2 = start_node(), start_node()
    a, b = PusherClient(n1.url), PusherClient(n2.url)
    a.established()
    b.established()
    a.subscribe_presence("presence-x", "a")
    data = b.subscribe_presence("presence-x", "b")
    assert sorted(data["presence"]["ids"]) == ["a", "b"]
    assert json.loads(a.expect("pusher_internal:member_added")["data"])["user_id"] == "b"
    b.send("client-wave", {"hi": 1}, channel="presence-x")
    msg = a.expect("client-wave", "presence-x")
    assert msg["user_id"] == "b"
    b.close()
    removed = a.expect("pusher_internal:member_removed", "presence-x")
    assert json.loads(removed["data"]) == {"user_id": "b"}
    a.close()


