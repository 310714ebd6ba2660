"""Limits a client cannot talk its way past: a frame over ``websocket.max_frame_bytes`` is
never processed (close 1009, nothing after it), and a connection holds at most
``websocket.max_channels_per_connection`` subscriptions."""

from __future__ import annotations

import json

import pytest
from ws_harness import NodeThread, PusherClient, RawClient

OP_TEXT, OP_CLOSE = 0x1, 0x8


def events_of(frames: list[tuple[int, bytes]]) -> list[str]:
    return [json.loads(p)["event"] for op, p in frames if op == OP_TEXT]


def after_close(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    ops = [op for op, _ in frames]
    assert OP_CLOSE in ops, frames
    return frames[ops.index(OP_CLOSE) + 1:]


def close_code(frames: list[tuple[int, bytes]]) -> int:
    payload = next(p for op, p in frames if op == OP_CLOSE)
    return int.from_bytes(payload[:2], "big")


# --------------------------------------------------------------------------- frame size


def test_oversized_subscribe_is_closed_1009_and_never_processed(node: NodeThread) -> None:
    limit = node.settings.websocket.max_frame_bytes
    raw = RawClient(node.url)
    big = {"event": "pusher:subscribe",
           "data": {"channel": "news-big", "auth": "", "pad": "x" * (limit + 6000)}}
    raw.send_json(big)
    frames = raw.frames_until_eof()
    raw.close()
    assert close_code(frames) == 1009
    assert "pusher_internal:subscription_succeeded" not in events_of(frames)
    assert after_close(frames) == []
    assert ("1", "news-big") not in node.node.hub.channels


def test_frames_after_an_oversized_one_are_not_processed(node: NodeThread) -> None:
    """Frames queued behind the oversized one in the same read are dropped too."""
    limit = node.settings.websocket.max_frame_bytes
    raw = RawClient(node.url)
    raw.send_json({"event": "client-x", "channel": "private-a", "data": "x" * (limit + 1)})
    for i in range(3):
        raw.send_json({"event": "pusher:subscribe", "data": {"channel": f"after-{i}"}})
        raw.send_json({"event": "pusher:ping", "data": {}})
    frames = raw.frames_until_eof()
    raw.close()
    assert close_code(frames) == 1009
    assert after_close(frames) == []
    assert set(events_of(frames)) <= {"pusher:connection_established"}
    assert not [k for k in node.node.hub.channels if k[1].startswith("after-")]


def test_oversized_client_event_is_not_broadcast(start_node) -> None:
    # An app whose event limit would let the event through: only the frame cap stops it.
    node = start_node(apps=[{"id": "1", "key": "app-key", "secret": "app-secret",
                             "max_event_bytes": 1_000_000}])
    sender, receiver, other = (PusherClient(node.url) for _ in range(3))
    for c in (sender, receiver, other):
        c.established()
        c.subscribe_private("private-room")
    sender.send("client-huge", "x" * 200_000, channel="private-room")
    assert sender.closed().code == 1009
    other.send("client-small", "hi", channel="private-room")
    # The first client event the receiver sees is the small one: the huge one never came.
    seen = [receiver.recv()["event"]]
    while seen[-1] != "client-small":
        seen.append(receiver.recv()["event"])
    assert "client-huge" not in seen, seen
    receiver.close()
    other.close()


# --------------------------------------------------------------------------- channels per conn.


@pytest.fixture
def capped(start_node) -> NodeThread:
    return start_node(max_channels_per_connection=3)


def test_channels_per_connection_cap(capped: NodeThread) -> None:
    c = PusherClient(capped.url)
    c.established()
    for i in range(3):
        c.subscribed(f"room-{i}")
    c.subscribe("room-3")
    err = c.expect("pusher:subscription_error", "room-3")
    assert err["data"]["type"] == "LimitReached"
    assert err["data"]["status"] == 4100
    assert "3 channels" in err["data"]["error"]
    assert ("1", "room-3") not in capped.node.hub.channels
    # The connection stays open, a channel already held can be subscribed again, and an
    # unsubscribe makes room.
    c.subscribed("room-0")
    c.send("pusher:unsubscribe", {"channel": "room-1"})
    c.subscribed("room-3")
    c.subscribe("private-4", auth="app-key:bad")  # full again, whatever the channel type
    assert c.expect("pusher:subscription_error", "private-4")["data"]["type"] == "LimitReached"
    c.send("pusher:ping", {})
    c.expect("pusher:pong")
    c.close()


def test_channels_per_connection_cap_counts_private_and_presence(capped: NodeThread) -> None:
    c = PusherClient(capped.url)
    c.established()
    c.subscribe_private("private-a")
    c.subscribe_presence("presence-b", "u1")
    c.subscribed("c")
    c.subscribe("presence-d", auth="x", channel_data=json.dumps({"user_id": "u1"}))
    assert c.expect("pusher:subscription_error", "presence-d")["data"]["type"] == "LimitReached"
    c.close()


def test_server_to_user_channel_does_not_count(capped: NodeThread) -> None:
    c = PusherClient(capped.url)
    c.established()
    c.signin(json.dumps({"id": "u9"}))
    c.expect("pusher:signin_success")
    for i in range(3):
        c.subscribed(f"room-{i}")
    c.close()


def test_default_cap_is_100_channels(node: NodeThread) -> None:
    c = PusherClient(node.url)
    c.established()
    for i in range(100):
        c.subscribe(f"many-{i}")
    for i in range(100):
        c.expect("pusher_internal:subscription_succeeded", f"many-{i}")
    c.subscribe("many-100")
    assert c.expect("pusher:subscription_error", "many-100")["data"]["status"] == 4100
    c.close()


# --------------------------------------------------------------------------- nested client data


@pytest.mark.parametrize("depth", [33, 255, 300, 1000])
def test_deeply_nested_client_event_is_refused_and_the_connection_kept(client, depth) -> None:
    """Data orjson parses (up to 1024 levels) but cannot encode again (254): it used to raise
    out of the frame handler, and picows closed the connection with 1011."""
    sender, receiver = client(), client()
    sender.subscribe_private("private-deep")
    receiver.subscribe_private("private-deep")
    sender.ws.send('{"event":"client-deep","channel":"private-deep","data":'
                   + "[" * depth + "]" * depth + "}")
    err = sender.expect("pusher:error")
    assert err["data"]["code"] is None and "nested deeper than 32" in err["data"]["message"]
    sender.send("client-flat", [[["ok"]]], channel="private-deep")
    assert receiver.expect("client-flat", "private-deep")["data"] == [[["ok"]]]
