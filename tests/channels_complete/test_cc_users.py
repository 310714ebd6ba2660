"""User authentication: #server-to-user-{id} events to every signed-in connection on every
node, terminate_connections across nodes, the sign-in timeout, and watchlists cluster-wide."""

from __future__ import annotations

import json
import time

import pytest
from _harness.client import data_of
from cc_harness import signin, unique

pytestmark = pytest.mark.slow


def signed_in(dep, node: int, user_id: str, app_id: str = "1", **extra):
    c = dep.client(node, app_id)
    signin(c, dep.sdk(app_id), {"id": user_id, **extra})
    frame = c.wait_for("pusher:signin_success")
    assert json.loads(frame["data"]["user_data"])["id"] == user_id
    return c


def watch_events(frame) -> dict[str, list[str]]:
    assert frame["event"] == "pusher_internal:watchlist_events" and "channel" not in frame
    return {e["name"]: e["user_ids"] for e in data_of(frame)["events"]}


def is_watch(f) -> bool:
    return f.get("event") == "pusher_internal:watchlist_events"


# --------------------------------------------------------------------------- server-to-user


def test_cc_send_to_user_reaches_every_connection_on_both_nodes(dep):
    sdk = dep.sdk()
    uid, other = unique("u"), unique("v")
    a, b, c = signed_in(dep, 0, uid), signed_in(dep, 1, uid), signed_in(dep, 1, other)
    # pusher-js subscribes to #server-to-user-{id} after signin_success; b does not: events
    # reach every signed-in connection regardless.
    a.subscribe(f"#server-to-user-{uid}")
    sdk.send_to_user(uid, "notice", {"n": 1})
    sdk.send_to_user(uid, "notice", {"n": 2})
    for client in (a, b):
        frames = client.collect("notice", f"#server-to-user-{uid}", 2, timeout=5)
        assert [data_of(f) for f in frames] == [{"n": 1}, {"n": 2}]
    c.assert_nothing(lambda f: f.get("event") == "notice", within=0.5)
    # Only the signed-in user may subscribe to its channel.
    c.send_event("pusher:subscribe", {"auth": "", "channel": f"#server-to-user-{uid}"})
    err = c.wait_for("pusher:subscription_error")
    assert err["data"]["status"] == 401
    for client in (a, b, c):
        client.close()


def test_cc_terminate_user_connections_across_nodes(dep):
    sdk = dep.sdk()
    uid = unique("t")
    a, b = signed_in(dep, 0, uid), signed_in(dep, 1, uid)
    bystander = signed_in(dep, 0, unique("w"))
    assert sdk.terminate_user_connections(uid) == {}
    for client in (a, b):
        err = client.wait_for("pusher:error")
        assert err["data"]["code"] == 4009
        assert client.wait_closed() == 4009
    assert bystander.ping()["event"] == "pusher:pong"
    bystander.close()


# --------------------------------------------------------------------------- sign-in timeout


def test_cc_signin_timeout_closes_with_4009(dep):
    idle = dep.client(1, app_id="3")
    idle.subscribe(unique("public-"))  # a public channel does not authorise
    err = idle.wait_for("pusher:error", timeout=4)
    assert err["data"] == {"code": 4009, "message": "Connection not authorized within timeout."}
    assert idle.wait_closed() == 4009


def test_cc_signin_or_private_subscription_prevents_timeout(dep):
    signed = signed_in(dep, 0, unique("s"), app_id="3")
    private = dep.client(1, app_id="3")
    private.subscribe(unique("private-"))
    time.sleep(1.6)
    for client in (signed, private):
        assert client.ping()["event"] == "pusher:pong"
        client.assert_nothing(lambda f: f.get("event") == "pusher:error", within=0.1)
        client.close()


def test_cc_no_timeout_when_app_does_not_require_it(dep):
    c = dep.client(0, app_id="1")
    time.sleep(1.5)
    assert c.ping()["event"] == "pusher:pong"
    c.close()


# --------------------------------------------------------------------------- watchlists


def test_cc_watchlist_online_offline_across_nodes(dep):
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    b0 = signed_in(dep, 1, bob)  # bob is online before alice signs in
    watcher = signed_in(dep, 0, alice, watchlist=[bob, carol])
    assert watch_events(watcher.wait_for(is_watch)) == {"online": [bob]}
    # carol signs in on the other node: online; a second connection of carol: no new event.
    c1 = signed_in(dep, 1, carol)
    assert watch_events(watcher.wait_for(is_watch)) == {"online": [carol]}
    c2 = signed_in(dep, 0, carol)
    watcher.assert_nothing(is_watch, within=0.5)
    # carol leaves one connection: still online; the last one: offline.
    c1.close()
    watcher.assert_nothing(is_watch, within=0.5)
    c2.close()
    assert watch_events(watcher.wait_for(is_watch)) == {"offline": [carol]}
    b0.close()
    assert watch_events(watcher.wait_for(is_watch)) == {"offline": [bob]}
    watcher.close()


def test_cc_watchlist_over_100_ids_4302_after_signin_success(dep):
    c = dep.client(0)
    ids = [f"x{i}" for i in range(101)]
    signin(c, dep.sdk(), {"id": unique("big"), "watchlist": ids})
    frames = c.drain(quiet=0.5)
    events = [f["event"] for f in frames]
    assert events[0] == "pusher:signin_success", frames
    errors = [f for f in frames if f["event"] == "pusher:error"]
    assert [e["data"]["code"] for e in errors] == [4302]
    # Only the first 100 are watched: x100 coming online is not reported.
    late = signed_in(dep, 1, "x100")
    c.assert_nothing(is_watch, within=0.5)
    x0 = signed_in(dep, 1, "x0")
    assert watch_events(c.wait_for(is_watch)) == {"online": ["x0"]}
    assert c.ping()["event"] == "pusher:pong"  # 4302 does not close
    for client in (c, late, x0):
        client.close()


def test_cc_signin_failure_closes_4009(dep):
    c = dep.client(1)
    c.send_event("pusher:signin", {"auth": "key-1:" + "0" * 64, "user_data": '{"id":"1"}'})
    assert c.wait_for("pusher:error")["data"]["code"] == 4009
    assert c.wait_closed() == 4009
