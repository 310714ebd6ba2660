"""pusher-js itself (the Node build of the npm package) against a real deployment.

pusher-js is installed from the npm registry into a cache directory the first time; the tests
are skipped, with the reason, on a machine without node and npm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _harness import Cluster
from _harness.cluster import APP_KEY, APP_SECRET
from _harness.node import Observer, npm_modules

SCRIPT = Path(__file__).parents[1] / "_harness" / "js" / "pusher_js_client.js"
PUSHER_JS = "pusher-js@8"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return npm_modules("pusher-js", [PUSHER_JS], "to run pusher-js")


class PusherJs(Observer):
    """One pusher-js client in a node process: commands on stdin, observations on stdout."""

    def __init__(self, node_modules: Path, ws_port: int, user_id: str) -> None:
        super().__init__(SCRIPT, {"NODE_PATH": str(node_modules), "KEY": APP_KEY,
                                  "SECRET": APP_SECRET, "PORT": str(ws_port),
                                  "USER_ID": user_id})


@pytest.fixture
def js(node_modules: Path, cluster: Cluster) -> Iterator[Callable[[str], PusherJs]]:
    started: list[PusherJs] = []

    def start(user_id: str) -> PusherJs:
        client = PusherJs(node_modules, cluster.node_ports[0], user_id)
        started.append(client)
        client.kind("connected")
        return client

    yield start
    for client in started:
        client.close()


def test_public_channel_event_from_the_python_sdk(js, sdk) -> None:
    alice = js("alice")
    alice.send(op="subscribe", channel="js-news")
    alice.kind("subscribed", channel="js-news")
    sdk.trigger("js-news", "headline", {"title": "hello"})
    got = alice.kind("event", channel="js-news", event="headline")
    assert got["data"] == {"title": "hello"}


def test_private_channel_and_client_events(js) -> None:
    alice, bob = js("alice"), js("bob")
    for client in (alice, bob):
        client.send(op="subscribe", channel="private-js-chat")
        client.kind("subscribed", channel="private-js-chat")
    alice.send(op="trigger", channel="private-js-chat", event="client-typing", data={"on": 1})
    assert alice.kind("triggered")["ok"] is True
    got = bob.kind("event", channel="private-js-chat", event="client-typing")
    assert got["data"] == {"on": 1}
    with pytest.raises(AssertionError):  # never echoed back to the sender
        alice.wait(lambda o: o.get("event") == "client-typing", timeout=1.0)


def test_presence_members(js) -> None:
    alice = js("alice")
    alice.send(op="subscribe", channel="presence-js-room")
    joined = alice.kind("subscribed", channel="presence-js-room")
    assert joined["members"]["count"] == 1 and joined["members"]["me"]["id"] == "alice"
    bob = js("bob")
    bob.send(op="subscribe", channel="presence-js-room")
    assert bob.kind("subscribed", channel="presence-js-room")["members"]["count"] == 2
    alice.kind("member_added", channel="presence-js-room", id="bob")
    bob.close()
    alice.kind("member_removed", channel="presence-js-room", id="bob")


def test_bad_channel_auth_is_a_subscription_error(js, cluster) -> None:
    # pusher-js's authorizer signs with the right secret; a channel name we refuse still
    # reaches pusher-js as a subscription error on that channel.
    alice = js("alice")
    alice.send(op="subscribe", channel="private-" + "x" * 200)
    assert alice.kind("subscription_error")["channel"].startswith("private-x")


def test_signin_and_send_to_user(js, sdk) -> None:
    alice = js("alice")
    alice.send(op="signin")
    alice.wait(lambda o: o.get("event") == "pusher:signin_success")
    # No wait for pusher-js's own #server-to-user subscription: the node delivers to every
    # connection signed in as the user from signin_success on.
    sdk.send_to_user("alice", "notice", {"n": 1})
    assert alice.kind("user_event", event="notice")["data"] == {"n": 1}
