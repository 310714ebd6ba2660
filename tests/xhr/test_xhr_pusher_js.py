"""Real pusher-js 8 (its Node build) with each HTTP transport forced, against a real deployment
(a node, a worker, the API, Redis): everything a WebSocket client does, and liveness."""

from __future__ import annotations

import time

import pytest
from _harness import Cluster

from tests.xhr.xhr_harness import TRANSPORTS, restart_node, wait_ready_counts

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("transport", TRANSPORTS)]


@pytest.fixture
def js(js_factory, cluster: Cluster, transport: str):
    def start(user_id: str):
        client = js_factory(cluster.node_ports[0], user_id, transport)
        client.kind("connected", timeout=20)
        return client

    return start


def test_connects_and_the_session_is_gone_after_it_leaves(js, cluster, transport) -> None:
    alice = js("alice")
    assert alice.kind("connected")["transport"] == transport
    port = cluster.node_ports[0]
    seen = wait_ready_counts(port, connections=1)
    assert seen["http_sessions"] == 1
    alice.close()
    # Counted like a closed socket at once; the closed session is kept for
    # http_session_timeout (its client's next request learns how it closed), then forgotten.
    wait_ready_counts(port, timeout=5, connections=0)
    wait_ready_counts(port, timeout=10, connections=0, http_sessions=0)


def test_public_and_cache_channels(js, sdk, transport) -> None:
    alice = js("alice")
    alice.send(op="subscribe", channel=f"news-{transport}")
    alice.kind("subscribed", channel=f"news-{transport}")
    sdk.trigger(f"news-{transport}", "headline", {"title": "héllo ☃"})
    got = alice.kind("event", channel=f"news-{transport}", event="headline")
    assert got["data"] == {"title": "héllo ☃"}
    sdk.trigger(f"cache-{transport}", "last", {"n": 7})
    alice.send(op="subscribe", channel=f"cache-{transport}")
    assert alice.kind("event", channel=f"cache-{transport}", event="last")["data"] == {"n": 7}


def test_private_channel_and_client_events(js, transport) -> None:
    channel = f"private-chat-{transport}"
    alice, bob = js("alice"), js("bob")
    for client in (alice, bob):
        client.send(op="subscribe", channel=channel)
        client.kind("subscribed", channel=channel)
    alice.send(op="trigger", channel=channel, event="client-typing", data={"on": 1})
    assert alice.kind("triggered")["ok"] is True
    assert bob.kind("event", channel=channel, event="client-typing")["data"] == {"on": 1}
    with pytest.raises(AssertionError):  # never echoed back to the sender
        alice.wait(lambda o: o.get("event") == "client-typing", timeout=1.0)


def test_presence_members_and_leaving(js, sdk, transport) -> None:
    channel = f"presence-room-{transport}"
    alice = js("alice")
    alice.send(op="subscribe", channel=channel)
    assert alice.kind("subscribed", channel=channel)["members"]["count"] == 1
    bob = js("bob")
    bob.send(op="subscribe", channel=channel)
    assert bob.kind("subscribed", channel=channel)["members"]["count"] == 2
    alice.kind("member_added", channel=channel, id="bob")
    assert sdk.channel_info(channel, ["user_count"])["user_count"] == 2
    bob.close()
    alice.kind("member_removed", channel=channel, id="bob")
    assert sdk.users_info(channel)["users"] == [{"id": "alice"}]


def test_signin_send_to_user_and_terminate(js, sdk, cluster, transport) -> None:
    user = f"carol-{transport}"
    carol = js(user)
    carol.send(op="signin")
    carol.wait(lambda o: o.get("event") == "pusher:signin_success")
    sdk.send_to_user(user, "notice", {"n": 1})
    assert carol.kind("user_event", event="notice")["data"] == {"n": 1}
    before = carol.mark()
    sdk.terminate_user_connections(user)
    error = carol.kind("error", since=before)["error"]
    assert error["data"]["code"] == 4009
    carol.kind("state", since=before, current="disconnected")


def test_silent_client_is_closed_then_reconnects(js, transport) -> None:
    """A client that stops answering (its process stopped) is closed by the node like a
    silent WebSocket, and its presence ends; once it runs again pusher-js reconnects."""
    channel = f"presence-silent-{transport}"
    alice, bob = js("alice"), js("bob")
    for client in (alice, bob):
        client.send(op="subscribe", channel=channel)
        client.kind("subscribed", channel=channel)
    first = bob.kind("connected")["socket_id"]
    bob.pause()
    started = time.monotonic()
    alice.kind("member_removed", channel=channel, id="bob", timeout=15)
    # activity_timeout + pong_timeout (streaming: no answer to heartbeats), or
    # http_session_timeout (polling: no next poll); never before the first of them.
    assert time.monotonic() - started >= 1.5
    before = bob.mark()
    bob.resume()
    again = bob.kind("connected", since=before, timeout=20)
    assert again["socket_id"] != first
    bob.kind("subscribed", since=before, channel=channel, timeout=10)
    alice.kind("member_added", channel=channel, id="bob")


def test_client_notices_a_frozen_node_and_reconnects(js, cluster, transport) -> None:
    """pusher-js's own activity check over HTTP: the node stops answering (SIGSTOP), pusher-js
    pings and gives up on the connection; when the node runs again it connects anew."""
    alice = js("alice")
    first = alice.kind("connected")["socket_id"]
    before = alice.mark()
    node = cluster.nodes[0]
    import signal

    node.kill_group(signal.SIGSTOP)
    try:
        # pusher-js: activity timeout (the node's, 2 s) then its pong timeout (30 s).
        alice.wait(lambda o: o["kind"] == "state" and o["current"] != "connected",
                   timeout=45, since=before)
    finally:
        node.kill_group(signal.SIGCONT)
    again = alice.kind("connected", since=before, timeout=30)
    assert again["socket_id"] != first


def test_node_restart_then_reconnect(js, sdk, cluster, transport) -> None:
    channel = f"restart-{transport}"
    alice = js("alice")
    alice.send(op="subscribe", channel=channel)
    alice.kind("subscribed", channel=channel)
    first = alice.kind("connected")["socket_id"]
    before = alice.mark()
    restart_node(cluster, 0)
    again = alice.kind("connected", since=before, timeout=45)
    assert again["socket_id"] != first
    alice.kind("subscribed", since=before, channel=channel, timeout=10)
    sdk.trigger(channel, "after", {"ok": True})
    assert alice.kind("event", since=before, channel=channel, event="after")["data"] == {
        "ok": True}
