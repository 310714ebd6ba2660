"""The official ``pusher`` Python SDK (pusher-http-python) against a running deployment, with
subscribers that speak like pusher-js (tests/_harness/client.py)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import nacl.secret
import pusher
import pytest
from _harness import Cluster
from _harness.client import data_of


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.1) -> Any:
    """``check()``'s value once it stops raising AssertionError (state written by the nodes
    reaches Redis a moment after the subscriber's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


@pytest.fixture
def client(cluster: Cluster):
    with cluster.client() as c:
        yield c


# --------------------------------------------------------------------------- publishing


def test_trigger_one_channel_relays_the_data_string_verbatim(cluster, sdk, client):
    channel = unique("my-channel-")
    client.subscribe(channel)
    assert sdk.trigger(channel, "my-event", {"message": "hello", "n": 1}) == {}
    frame = client.wait_for("my-event", channel)
    # The SDK sends json.dumps(data) (with spaces); the node relays that string untouched.
    assert frame["data"] == json.dumps({"message": "hello", "n": 1})
    assert set(frame) == {"event", "channel", "data"}


def test_trigger_string_data_is_not_reencoded(sdk, client):
    channel = unique("plain-")
    client.subscribe(channel)
    sdk.trigger(channel, "text", "just a string, not JSON")
    assert client.wait_for("text", channel)["data"] == "just a string, not JSON"


def test_trigger_many_channels(cluster, sdk):
    channels = [unique(f"multi{i}-") for i in range(3)]
    clients = [cluster.client() for _ in channels]
    try:
        for c, ch in zip(clients, channels, strict=True):
            c.subscribe(ch)
        both = cluster.client()
        both.subscribe(channels[0])
        both.subscribe(channels[1])
        sdk.trigger(channels, "fan-out", {"to": "all"})
        for c, ch in zip(clients, channels, strict=True):
            assert data_of(c.wait_for("fan-out", ch)) == {"to": "all"}
        # A socket on two of the channels gets the event once per channel.
        got = sorted(both.wait_for("fan-out")["channel"] for _ in range(2))
        assert got == sorted(channels[:2])
        both.assert_nothing(lambda f: f.get("event") == "fan-out", within=0.5)
        both.close()
    finally:
        for c in clients:
            c.close()


def test_trigger_batch_in_order(sdk, client):
    a, b = unique("batch-a-"), unique("batch-b-")
    client.subscribe(a)
    client.subscribe(b)
    batch = [
        {"channel": a, "name": "e", "data": {"i": 0}},
        {"channel": b, "name": "e", "data": {"i": 1}},
        {"channel": a, "name": "e", "data": {"i": 2}},
        {"channel": a, "name": "e", "data": "three"},
    ]
    assert sdk.trigger_batch(batch) == {}
    assert [data_of(f) for f in client.collect("e", a, 3)] == [{"i": 0}, {"i": 2}, "three"]
    assert [data_of(f) for f in client.collect("e", b, 1)] == [{"i": 1}]


def test_socket_id_excludes_the_publisher(cluster, sdk):
    channel = unique("exclusion-")
    with cluster.client() as publisher, cluster.client() as other:
        publisher.subscribe(channel)
        other.subscribe(channel)
        sdk.trigger(channel, "echo", {"n": 1}, socket_id=publisher.socket_id)
        sdk.trigger(channel, "sentinel", {"n": 2})
        assert data_of(other.wait_for("echo", channel)) == {"n": 1}
        other.wait_for("sentinel", channel)
        # Events on one channel arrive in order: the publisher sees the sentinel and never the
        # event it was excluded from.
        publisher.wait_for("sentinel", channel)
        assert not [f for f in publisher.pending if f.get("event") == "echo"]
        publisher.assert_nothing(lambda f: f.get("event") == "echo", within=0.3)


def test_trigger_batch_with_socket_id(cluster, sdk):
    channel = unique("batch-excl-")
    with cluster.client() as publisher, cluster.client() as other:
        publisher.subscribe(channel)
        other.subscribe(channel)
        sdk.trigger_batch([
            {"channel": channel, "name": "x", "data": "1", "socket_id": publisher.socket_id},
            {"channel": channel, "name": "y", "data": "2"},
        ])
        assert [f["event"] for f in other.collect("x", channel, 1)] == ["x"]
        other.wait_for("y", channel)
        publisher.wait_for("y", channel)
        assert not [f for f in publisher.pending if f.get("event") == "x"]


# --------------------------------------------------------------------------- channel info


def test_channels_info(cluster, sdk):
    public, presence = unique("info-"), unique("presence-info-")
    with cluster.client() as c1, cluster.client() as c2:
        c1.subscribe(public)
        c2.subscribe(public)
        c1.subscribe(presence, user_id="u1", user_info={"name": "One"})
        c2.subscribe(presence, user_id="u2")

        def listed() -> dict:
            channels = sdk.channels_info()["channels"]
            assert public in channels and presence in channels, channels
            return channels

        eventually(listed)

        def presence_only() -> dict:
            info = sdk.channels_info(prefix_filter="presence-info-", attributes=["user_count"])
            assert info["channels"].get(presence) == {"user_count": 2}, info
            assert public not in info["channels"]
            return info

        eventually(presence_only)
    # Vacated channels leave the list.
    eventually(lambda: _assert_absent(sdk, public))


def _assert_absent(sdk: pusher.Pusher, channel: str) -> None:
    assert channel not in sdk.channels_info()["channels"]


def test_channel_info(cluster, sdk):
    public, presence = unique("occupied-"), unique("presence-occupied-")
    assert sdk.channel_info(unique("nobody-"))["occupied"] is False
    with cluster.client() as c1, cluster.client() as c2:
        c1.subscribe(public)
        c2.subscribe(public)
        c1.subscribe(presence, user_id="42")
        c2.subscribe(presence, user_id="42")  # a second tab of the same user

        def public_counted() -> None:
            info = sdk.channel_info(public, ["subscription_count"])
            assert info == {"occupied": True, "subscription_count": 2}, info

        def presence_counted() -> None:
            info = sdk.channel_info(presence, ["user_count"])
            assert info == {"occupied": True, "user_count": 1}, info

        eventually(public_counted)
        eventually(presence_counted)
        assert sdk.channel_info(public) == {"occupied": True}
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channel_info(public, ["user_count"])  # user_count is for presence channels


def test_users_info(cluster, sdk):
    presence = unique("presence-users-")
    with cluster.client() as c1, cluster.client() as c2, cluster.client() as c3:
        c1.subscribe(presence, user_id="alice")
        c2.subscribe(presence, user_id="bob", user_info={"name": "Bob"})
        c3.subscribe(presence, user_id="bob")  # same user, second connection

        def both() -> None:
            users = sdk.users_info(presence)["users"]
            assert sorted(users, key=lambda u: u["id"]) == [{"id": "alice"}, {"id": "bob"}], users

        eventually(both)
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.users_info(unique("not-presence-"))


def test_bad_credentials_are_refused(cluster, sdk):
    with pytest.raises(pusher.errors.PusherBadAuth):
        cluster.pusher(secret="not-the-secret").trigger("c", "e", {})
    with pytest.raises(pusher.errors.PusherBadAuth):
        cluster.pusher(key="not-the-key").channels_info()
    with pytest.raises(pusher.errors.PusherError):
        cluster.pusher(app_id="999").trigger("c", "e", {})
    assert sdk.trigger(unique("still-fine-"), "e", {}) == {}


# --------------------------------------------------------------------------- channel auth


def test_private_channel_auth_from_the_sdk(cluster, sdk, client):
    channel = unique("private-")
    frame = client.subscribe(channel)
    assert frame["data"] == "{}"
    sdk.trigger(channel, "secret-event", {"ok": True})
    assert data_of(client.wait_for("secret-event", channel)) == {"ok": True}


def test_private_channel_refuses_a_forged_signature(cluster, client):
    channel = unique("private-")
    forged = cluster.pusher(secret="wrong-secret").authenticate(channel, client.socket_id)
    with pytest.raises(AssertionError, match="subscription_error|pusher:error"):
        client.subscribe(channel, auth=forged["auth"])
    # Signed for another socket: refused too.
    other_socket = cluster.pusher().authenticate(channel, "1234.5678")
    with pytest.raises(AssertionError):
        client.subscribe(channel, auth=other_socket["auth"])
    # The connection still works.
    client.subscribe(channel)


def test_presence_channel_auth_from_the_sdk(cluster, sdk):
    channel = unique("presence-")
    with cluster.client() as a, cluster.client() as b:
        first = data_of(a.subscribe(channel, user_id="1", user_info={"name": "Ada"}))
        assert first["presence"]["count"] == 1
        assert first["presence"]["hash"] == {"1": {"name": "Ada"}}
        assert first["presence"]["ids"] == ["1"]
        second = data_of(b.subscribe(channel, user_id="2", user_info={"name": "Bo"}))
        assert second["presence"]["count"] == 2
        assert second["presence"]["hash"] == {"1": {"name": "Ada"}, "2": {"name": "Bo"}}
        added = a.wait_for("pusher_internal:member_added", channel)
        assert data_of(added) == {"user_id": "2", "user_info": {"name": "Bo"}}
        b.unsubscribe(channel)
        removed = a.wait_for("pusher_internal:member_removed", channel)
        assert data_of(removed) == {"user_id": "2"}


def test_presence_channel_data_must_match_the_signature(cluster):
    channel = unique("presence-")
    with cluster.client() as c:
        signed = cluster.pusher().authenticate(channel, c.socket_id, custom_data={"user_id": "1"})
        with pytest.raises(AssertionError):
            c.subscribe(channel, auth=signed["auth"], channel_data=json.dumps({"user_id": "2"}))
        c.subscribe(channel, auth=signed["auth"], channel_data=signed["channel_data"])


def test_encrypted_channel_auth_and_payload_relay(cluster, sdk, client):
    channel = unique("private-encrypted-")
    signed = sdk.authenticate(channel, client.socket_id)
    assert "shared_secret" in signed  # for the client only; not part of the signature
    client.subscribe(channel, auth=signed["auth"])
    sdk.trigger(channel, "sealed", {"msg": "for your eyes only"})
    frame = client.wait_for("sealed", channel)
    envelope = json.loads(frame["data"])
    assert set(envelope) == {"nonce", "ciphertext"}
    box = nacl.secret.SecretBox(base64.b64decode(signed["shared_secret"]))
    plain = box.decrypt(
        base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"])
    )
    assert json.loads(plain) == {"msg": "for your eyes only"}


def test_user_authentication_signin(cluster, client):
    user_data = {"id": "user-7", "user_info": {"name": "Seven"}}
    signed = cluster.pusher().authenticate_user(client.socket_id, user_data)
    client.send_event("pusher:signin", {"auth": signed["auth"], "user_data": signed["user_data"]})
    frame = client.wait_for("pusher:signin_success")
    assert json.loads(frame["data"]["user_data"]) == user_data
    client.ping()

