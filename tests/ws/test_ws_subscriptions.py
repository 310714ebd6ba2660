"""Subscribing: public, private, encrypted, presence (two tabs, limits), user channels, signin."""

from __future__ import annotations

import json

import redis
from ws_harness import APP_ID, KEY, SECRET, PusherClient, wait_until

from gateway.protocol.signatures import auth_token, channel_string
from gateway.state.keys import Keys


def test_public_subscribe(client) -> None:
    c = client()
    msg = c.subscribed("news")
    assert msg["data"] == "{}"


def test_pysher_subscribe_without_auth(client) -> None:
    c = client()
    c.send("pusher:subscribe", {"channel": "news"})
    c.expect("pusher_internal:subscription_succeeded", "news")


def test_duplicate_subscribe_is_idempotent(client) -> None:
    c = client()
    c.subscribed("news")
    c.subscribed("news")


def test_bad_channel_name(client) -> None:
    c = client()
    c.subscribe("bad name!")
    err = c.expect("pusher:subscription_error", "bad name!")
    assert err["data"]["type"] == "InvalidChannel"
    c.subscribe("x" * 201)
    c.expect("pusher:subscription_error")


def test_private_subscribe_and_bad_auth(client) -> None:
    c = client()
    c.subscribe_private("private-orders")
    c.subscribe("private-other", auth=auth_token(KEY, SECRET, f"{c.socket_id}:private-x"))
    err = c.expect("pusher:subscription_error", "private-other")
    assert err["data"] == {"type": "AuthError", "error": "The connection is unauthorized.",
                           "status": 401}
    c.subscribe("private-other", auth="")
    c.expect("pusher:subscription_error", "private-other")
    # the connection stays open
    c.send("pusher:ping", {})
    c.expect("pusher:pong")


def test_auth_signed_for_another_socket_is_refused(client) -> None:
    a, b = client(), client()
    auth = auth_token(KEY, SECRET, channel_string(a.socket_id, "private-x"))
    b.subscribe("private-x", auth=auth)
    b.expect("pusher:subscription_error", "private-x")


def test_encrypted_subscribe(client) -> None:
    c = client()
    c.subscribe_private("private-encrypted-vault")


def test_presence_two_tabs_one_member(client) -> None:
    watcher, tab1, tab2 = client(), client(), client()
    data = watcher.subscribe_presence("presence-room", "w", {"name": "Watcher"})
    assert data["presence"] == {"ids": ["w"], "hash": {"w": {"name": "Watcher"}}, "count": 1}

    data = tab1.subscribe_presence("presence-room", 42, {"name": "Ann"})  # numeric id
    assert data["presence"]["count"] == 2
    assert data["presence"]["hash"]["42"] == {"name": "Ann"}
    added = watcher.expect("pusher_internal:member_added", "presence-room")
    assert json.loads(added["data"]) == {"user_id": "42", "user_info": {"name": "Ann"}}

    # Second tab of the same user: no new member_added; the joiner's own tab sees none either.
    data = tab2.subscribe_presence("presence-room", 42, {"name": "Ann"})
    assert data["presence"]["count"] == 2
    tab1.send("pusher:unsubscribe", {"channel": "presence-room"})
    # Still there through tab2: the next thing the watcher sees is tab2's departure.
    tab2.close()
    removed = watcher.expect("pusher_internal:member_removed", "presence-room")
    assert json.loads(removed["data"]) == {"user_id": "42"}


def test_presence_member_removed_on_unsubscribe(client) -> None:
    a, b = client(), client()
    a.subscribe_presence("presence-u", "a")
    b.subscribe_presence("presence-u", "b")
    a.expect("pusher_internal:member_added", "presence-u")
    b.send("pusher:unsubscribe", {"channel": "presence-u"})
    removed = a.expect("pusher_internal:member_removed", "presence-u")
    assert json.loads(removed["data"]) == {"user_id": "b"}


def test_presence_bad_auth_and_missing_channel_data(client) -> None:
    c = client()
    data = '{"user_id":"1"}'
    c.subscribe("presence-x", auth=auth_token(KEY, SECRET, f"{c.socket_id}:presence-x:{{}}"),
                channel_data=data)
    c.expect("pusher:subscription_error", "presence-x")
    c.subscribe("presence-x", auth=auth_token(KEY, SECRET, f"{c.socket_id}:presence-x"))
    c.expect("pusher:subscription_error", "presence-x")


def test_presence_member_limit(start_node) -> None:
    node = start_node(apps=[{"id": APP_ID, "key": KEY, "secret": SECRET,
                             "max_presence_members": 1}])
    a, b = PusherClient(node.url), PusherClient(node.url)
    a.established()
    b.established()
    a.subscribe_presence("presence-full", "1")
    b.subscribe("presence-full", auth=auth_token(
        KEY, SECRET, channel_string(b.socket_id, "presence-full", '{"user_id":"2"}')),
        channel_data='{"user_id":"2"}')
    err = b.expect("pusher:subscription_error", "presence-full")
    assert err["data"]["type"] == "LimitReached"
    # Another tab of the member already in does fit.
    b.subscribe_presence("presence-full", "1")


def test_presence_user_info_too_large(client) -> None:
    c = client()
    info = {"bio": "x" * 2000}
    data = json.dumps({"user_id": "1", "user_info": info})
    c.subscribe("presence-big", auth=auth_token(
        KEY, SECRET, channel_string(c.socket_id, "presence-big", data)), channel_data=data)
    err = c.expect("pusher:subscription_error", "presence-big")
    assert err["data"]["type"] == "LimitReached"


def test_presence_state_in_redis(client, redis_client: redis.Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    c = client()
    c.subscribe_presence("presence-r", "u1", {"n": 1})
    assert redis_client.hkeys(keys.presence_members(APP_ID, "presence-r")) == [b"u1"]
    c.close()
    wait_until(lambda: not redis_client.exists(keys.presence_members(APP_ID, "presence-r")))


def test_occupancy_written_per_node(node, client, redis_client: redis.Redis,
                                    key_prefix: str) -> None:
    keys = Keys(key_prefix)
    occ = keys.occupancy(APP_ID, node.node.node_id)
    a, b = client(), client()
    a.subscribed("busy")
    b.subscribed("busy")
    wait_until(lambda: redis_client.hget(occ, "busy") == b"2")
    a.send("pusher:unsubscribe", {"channel": "busy"})
    wait_until(lambda: redis_client.hget(occ, "busy") == b"1")
    b.close()
    wait_until(lambda: redis_client.hget(occ, "busy") is None)


def test_signin_and_server_to_user_channel(client) -> None:
    c = client()
    c.subscribe("#server-to-user-42")  # not signed in yet
    c.expect("pusher:subscription_error", "#server-to-user-42")
    user_data = '{"id":"42","user_info":{"name":"Ann"}}'
    c.signin(user_data)
    msg = c.expect("pusher:signin_success")
    assert msg["data"] == {"user_data": user_data}
    c.subscribed("#server-to-user-42")
    c.subscribe("#server-to-user-43")
    c.expect("pusher:subscription_error", "#server-to-user-43")


def test_signin_failure_closes_4009(client) -> None:
    c = client()
    c.send("pusher:signin", {"auth": f"{KEY}:bad", "user_data": '{"id":"1"}'})
    assert c.expect("pusher:error")["data"]["code"] == 4009
    assert c.closed().code == 4009


def test_signin_numeric_id_refused(client) -> None:
    c = client()
    c.signin('{"id":1}')
    assert c.expect("pusher:error")["data"]["code"] == 4009
    assert c.closed().code == 4009
