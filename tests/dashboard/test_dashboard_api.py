"""The dashboard's HTTP surface against a real deployment: off unless configured, nothing
without sign-in, CSRF on actions, and a debug log written only while somebody watches."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
import requests
from _harness import Cluster

from config.settings import Settings
from gateway.api.app import create_app
from gateway.dashboard import debuglog
from tests.dashboard.conftest import TOKEN, signed_in
from tests.webhooks.harness import Answer, Received, Receiver

pytestmark = pytest.mark.slow

READS = ["/api/session", "/api/apps", "/api/apps/1", "/api/apps/1/log", "/api/apps/1/chart",
         "/api/apps/1/channels", "/api/apps/1/channels/c", "/api/apps/1/webhooks",
         "/api/apps/1/push"]
ACTIONS = ["/api/apps/1/events", "/api/apps/1/secret", "/api/apps/1/webhooks/x/replay",
           "/api/signout"]


def _url(cluster: Cluster, path: str) -> str:
    return f"{cluster.api_url}/dashboard{path}"


def _wait(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("dashboard", [{}, {"enabled": False, "admin_token": TOKEN}])
def test_off_unless_enabled_with_a_token(redis_url: str, dashboard: dict[str, Any]) -> None:
    settings = Settings().with_overrides(redis={"url": redis_url}, dashboard=dashboard)
    app = create_app(settings)
    try:
        for path in ("/dashboard", "/dashboard/api/signin", "/dashboard/static/app.mjs"):
            r = app.test_client().get(path)
            assert (r.status_code, r.json["code"]) == (404, 404), path
        assert app.extensions["clarion"].debuglog is None
    finally:
        app.extensions["clarion"].close()


def test_a_short_token_is_refused_by_the_settings() -> None:
    from config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="dashboard.admin_token"):
        load_settings(environ={"CLARION_DASHBOARD__ADMIN_TOKEN": "short"})


def test_nothing_without_signing_in(cluster: Cluster) -> None:
    for path in READS:
        r = requests.get(_url(cluster, path), timeout=10)
        assert r.status_code == 401, path
        assert r.json() == {"error": "Sign in with the admin token first", "code": 401}
    for path in ACTIONS:
        r = requests.post(_url(cluster, path), json={}, timeout=10)
        assert r.status_code == 401, path
    # A cookie not signed with the admin token is no session either.
    r = requests.get(_url(cluster, "/api/apps"), cookies={"clarion_dashboard": "forged"},
                     timeout=10)
    assert r.status_code == 401


@pytest.mark.parametrize("body", [{"token": TOKEN + "x"}, {"token": TOKEN[:-1]},
                                  {"token": ""}, {}, [TOKEN]])
def test_a_wrong_token_is_refused(cluster: Cluster, body: Any) -> None:
    r = requests.post(_url(cluster, "/api/signin"), json=body, timeout=10)
    assert r.status_code in (400, 401)
    assert r.json()["code"] == r.status_code and r.json()["error"]
    assert "Set-Cookie" not in r.headers


def test_sign_in_sets_a_strict_httponly_cookie(cluster: Cluster) -> None:
    r = requests.post(_url(cluster, "/api/signin"), json={"token": TOKEN}, timeout=10)
    assert r.status_code == 200 and r.json()["signed_in"] is True
    cookie = r.headers["Set-Cookie"]
    for flag in ("clarion_dashboard=", "HttpOnly", "SameSite=Strict", "Path=/dashboard"):
        assert flag in cookie
    s, csrf = signed_in(cluster)
    assert s.get(_url(cluster, "/api/session"), timeout=10).json()["csrf"] == csrf


def test_actions_need_the_csrf_token(cluster: Cluster) -> None:
    s, csrf = signed_in(cluster)
    event = {"channel": "csrf-test", "name": "ping", "data": "{}"}
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf + "x"}):
        r = s.post(_url(cluster, "/api/apps/1/events"), json=event, headers=headers, timeout=10)
        assert r.status_code == 403
        assert "X-CSRF-Token" in r.json()["error"]
    # Another session's token is no good either.
    _, other = signed_in(cluster)
    r = s.post(_url(cluster, "/api/apps/1/events"), json=event,
               headers={"X-CSRF-Token": other}, timeout=10)
    assert r.status_code == 403
    sdk = cluster.pusher()
    assert "csrf-test" not in json.dumps(sdk.channels_info())  # nothing was published
    r = s.post(_url(cluster, "/api/apps/1/events"), json=event, headers={"X-CSRF-Token": csrf},
               timeout=10)
    assert r.status_code == 200 and r.json() == {"sent": True, "channel": "csrf-test",
                                                 "name": "ping"}


def test_secret_is_masked_until_revealed(cluster: Cluster) -> None:
    s, csrf = signed_in(cluster)
    app = s.get(_url(cluster, "/api/apps/1"), timeout=10).json()
    assert "app-secret" not in json.dumps(app)
    assert app["secret_masked"].startswith("app")
    r = s.post(_url(cluster, "/api/apps/1/secret"), headers={"X-CSRF-Token": csrf}, timeout=10)
    assert r.json() == {"secret": "app-secret"}
    assert s.get(_url(cluster, "/api/apps/9"), timeout=10).status_code == 404


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"channel": "bad channel!", "name": "e", "data": "{}"}, 400, "channel"),
    ({"channel": "c", "name": "e", "data": {"not": "a string"}}, 400, "data must be a string"),
    ({"channel": "c", "data": "{}"}, 400, "name"),
    ([1, 2], 400, "JSON object"),
])
def test_event_creator_refuses_bad_input(cluster: Cluster, body: Any, status: int,
                                         message: str) -> None:
    s, csrf = signed_in(cluster)
    r = s.post(_url(cluster, "/api/apps/1/events"), json=body, headers={"X-CSRF-Token": csrf},
               timeout=10)
    assert r.status_code == status, r.text
    assert message.lower() in r.json()["error"].lower()


def test_log_refuses_a_bad_cursor(cluster: Cluster) -> None:
    s, _ = signed_in(cluster)
    r = s.get(_url(cluster, "/api/apps/1/log?after=yesterday"), timeout=10)
    assert r.status_code == 400 and "entry id" in r.json()["error"]


def test_the_log_is_written_only_while_watched(cluster: Cluster) -> None:
    prefix = cluster.settings.redis.key_prefix
    r = redis.Redis.from_url(cluster.settings.redis.url)
    key = debuglog.log_key(prefix, "1")
    r.delete(key, debuglog.watch_key(prefix))
    time.sleep(1.2)  # every process has re-read the (empty) watched set
    sdk = cluster.pusher()
    sdk.trigger("unwatched", "e", {"n": 1})
    with cluster.client() as client:
        client.subscribe("unwatched")
    time.sleep(1.0)
    assert r.xlen(key) == 0

    s, _ = signed_in(cluster)
    assert s.get(_url(cluster, "/api/apps/1/log"), timeout=10).json()["entries"] == []
    time.sleep(1.2)  # processes see the app watched
    sdk.trigger("watched", "greeting", {"hello": "world"})
    with cluster.client() as client:
        client.subscribe("watched")

    def kinds() -> set[str]:
        entries = s.get(_url(cluster, "/api/apps/1/log"), timeout=10).json()["entries"]
        return {e["kind"] for e in entries}

    # The subscription occupies the channel: its channel_occupied webhook is the worker's.
    _wait(lambda: {"api_event", "connected", "subscribed", "disconnected", "webhook"} <= kinds(),
          "entries from the API, the node and the worker")
    entries = s.get(_url(cluster, "/api/apps/1/log"), timeout=10).json()["entries"]
    assert [e["at_ms"] for e in entries] == sorted((e["at_ms"] for e in entries), reverse=True)
    event = next(e for e in entries if e["kind"] == "api_event")
    assert event["channel"] == "watched" and event["event"] == "greeting"
    assert event["source"] == "api" and event["serial"] > 0
    assert json.loads(event["data"]) == {"hello": "world"}
    sub = next(e for e in entries if e["kind"] == "subscribed")
    assert sub["channel"] == "watched" and sub["source"] != "api"
    hook = next(e for e in entries if e["kind"] == "webhook")
    assert hook["source"] == "worker" and hook["outcome"] == "delivered"
    assert hook["attempt"] == 1 and hook["http_status"] == 200
    # Only newer entries after a cursor.
    newest = entries[0]["id"]
    assert s.get(_url(cluster, f"/api/apps/1/log?after={newest}"),
                 timeout=10).json()["entries"] == []
    r.close()


def test_the_log_is_capped(redis_client: redis.Redis, key_prefix: str) -> None:
    log = debuglog.DebugLog(redis_client, key_prefix, 10, "test")
    log.write([("1", "api_event", {"n": i}) for i in range(50)])
    assert len(log._buffer) == 10  # the buffer holds a stream's worth at most
    log.flush()
    for batch in range(200):
        log.write([("1", "api_event", {"n": batch * 10 + i}) for i in range(10)])
        log.flush()
    # Trimmed approximately (whole stream nodes of 100 entries), never unbounded.
    assert redis_client.xlen(debuglog.log_key(key_prefix, "1")) <= 110
    newest = debuglog.read(redis_client, key_prefix, "1", None, 1)[0]
    assert newest["n"] == 1999
    big = {"data": "x" * 10_000, "channel": "c"}
    log.write([("2", "api_event", big)])
    # Written by the process's flusher thread within FLUSH_SECONDS.
    deadline = time.monotonic() + 5
    while not redis_client.exists(debuglog.log_key(key_prefix, "2")):
        assert time.monotonic() < deadline, "the flusher thread never wrote"
        time.sleep(0.05)
    (entry,) = debuglog.read(redis_client, key_prefix, "2", None, 10)
    assert entry["channel"] == "c" and entry["data"] == "(cut: too long to show)"


def test_overview_and_channel_view_show_live_state(cluster: Cluster) -> None:
    s, _ = signed_in(cluster)
    sdk = cluster.pusher()
    sdk.trigger("cache-dash", "snapshot", {"v": 1})
    sdk.trigger("cache-dash", "snapshot", {"v": 2})
    with cluster.client() as alice, cluster.client() as bob:
        alice.subscribe("presence-dash", user_id="alice", user_info={"name": "Alice"})
        bob.subscribe("presence-dash", user_id="bob")
        alice.subscribe("cache-dash")

        def overview() -> dict[str, Any]:
            apps = s.get(_url(cluster, "/api/apps"), timeout=10).json()["apps"]
            return next(a for a in apps if a["id"] == "1")

        row = _wait(lambda: (o := overview())["presence_members"] == 2
                    and o["channels"] >= 2 and o, "the counts")
        assert row["connections"] >= 2
        listed = s.get(_url(cluster, "/api/apps/1/channels"), timeout=10).json()["channels"]
        assert {"name": "presence-dash", "subscriptions": 2} in listed

        presence = s.get(_url(cluster, "/api/apps/1/channels/presence-dash"), timeout=10).json()
        assert presence["kind"] == "presence" and presence["subscriptions"] == 2
        assert [m["id"] for m in presence["members"]] == ["alice", "bob"]
        assert json.loads(presence["members"][0]["info"]) == {"name": "Alice"}

        cache = s.get(_url(cluster, "/api/apps/1/channels/cache-dash"), timeout=10).json()
        assert json.loads(cache["cache"]["data"]) == {"v": 2} and cache["cache"]["ttl"] > 0
        assert [json.loads(e["data"]) for e in cache["history"]] == [{"v": 2}, {"v": 1}]
        assert cache["history"][0]["serial"] > cache["history"][1]["serial"]

    bad = s.get(_url(cluster, "/api/apps/1/channels/" + "x" * 300), timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == 400
    for status in ("sideways", ""):
        r = s.get(_url(cluster, f"/api/apps/1/webhooks?status={status}"), timeout=10)
        assert r.status_code == 400


def test_client_events_and_presence_are_logged_while_watched(cluster: Cluster) -> None:
    s, _ = signed_in(cluster)
    s.get(_url(cluster, "/api/apps/1/log"), timeout=10)
    time.sleep(1.2)
    with cluster.client() as sender, cluster.client() as other:
        sender.subscribe("private-chat")
        other.subscribe("private-chat")
        sender.send_event("client-typing", {"who": "me"}, channel="private-chat")
        other.wait_for(lambda f: f.get("event") == "client-typing")
        sender.subscribe("presence-lobby", user_id="carol")

    def logged() -> dict[str, Any] | None:
        entries = s.get(_url(cluster, "/api/apps/1/log"), timeout=10).json()["entries"]
        return next((e for e in entries if e["kind"] == "client_event"), None)

    entry = _wait(logged, "the client event")
    assert entry["channel"] == "private-chat" and entry["event"] == "client-typing"
    assert entry["data"] == {"who": "me"}

    def members() -> list[tuple[str, str, str]] | None:
        entries = s.get(_url(cluster, "/api/apps/1/log"), timeout=10).json()["entries"]
        found = [(e["kind"], e["user_id"], e["channel"]) for e in entries
                 if e["kind"].startswith("member_") and e["channel"] == "presence-lobby"]
        return found if len(found) == 2 else None

    # The sender left when its connection closed: added, then removed (newest first).
    assert _wait(members, "presence joins and leaves") == [
        ("member_removed", "carol", "presence-lobby"), ("member_added", "carol", "presence-lobby")]


def test_replay_of_an_unknown_delivery_is_404(cluster: Cluster) -> None:
    s, csrf = signed_in(cluster)
    r = s.post(_url(cluster, "/api/apps/1/webhooks/wh_nope/replay"),
               headers={"X-CSRF-Token": csrf}, timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "No delivery wh_nope", "code": 404}
    assert s.get(_url(cluster, "/api/apps/1/webhooks/wh_nope"), timeout=10).status_code == 404


def test_push_page_lists_the_latest_publishes(redis_client: redis.Redis,
                                              key_prefix: str) -> None:
    from gateway.state.publishes import RECENT, PublishStore

    store = PublishStore(redis_client, key_prefix, 60)
    for i in range(RECENT + 5):
        store.create("1", f"pub-{i}", "interests", ["news"], {"fcm": {}})
    recent = store.recent("1")
    assert len(recent) == RECENT
    assert [p["publishId"] for p in recent[:2]] == [f"pub-{RECENT + 4}", f"pub-{RECENT + 3}"]
    assert recent[0]["status"] == "queued" and recent[0]["devices"] == 0
    assert store.recent("2") == []


def test_charts_sample_connections_events_and_deliveries(cluster: Cluster) -> None:
    s, _ = signed_in(cluster)
    sdk = cluster.pusher()
    with cluster.client() as client:
        client.subscribe("chart-room")
        for n in range(5):
            sdk.trigger("chart-room", "tick", {"n": n})
        client.collect("tick", "chart-room", 5, timeout=10)

        def recent() -> dict[str, int] | None:
            minutes = s.get(_url(cluster, "/api/apps/1/chart"), timeout=10).json()["minutes"]
            last = minutes[-2:]  # a minute may turn meanwhile
            got = {k: sum(m[k] for m in last) for k in ("events", "delivered")}
            got["connections"] = max(m["connections"] for m in last)
            ok = got["connections"] >= 1 and got["events"] >= 5 and got["delivered"] >= 5
            return got if ok else None

        _wait(recent, "the chart samples (every 5 s)", timeout=20)
    minutes = s.get(_url(cluster, "/api/apps/1/chart"), timeout=10).json()["minutes"]
    assert len(minutes) == cluster.settings.dashboard.chart_minutes
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)


def test_sign_in_attempts_are_limited_per_address(cluster: Cluster) -> None:
    """From an address of its own (127.0.0.2), so the other tests' sign-ins are not held up."""
    import http.client

    def sign_in(token: str) -> tuple[int, Any, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.api_port, timeout=10,
                                          source_address=("127.0.0.2", 0))
        try:
            conn.request("POST", "/dashboard/api/signin", json.dumps({"token": token}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.headers, json.loads(r.read())
        finally:
            conn.close()

    statuses = [sign_in(f"guess-{i}")[0] for i in range(10)]
    assert statuses == [401] * 10
    status, headers, body = sign_in(TOKEN)  # even the right token waits now
    assert status == 429 and body["code"] == 429 and "failed sign-ins" in body["error"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Other addresses are not held up.
    signed_in(cluster)


def test_the_console_shows_every_node(cluster_factory: Any) -> None:
    two = cluster_factory(nodes=2, workers=1, dashboard={"admin_token": TOKEN})
    s, _ = signed_in(two)
    s.get(_url(two, "/api/apps/1/log"), timeout=10)
    time.sleep(1.5)
    with two.client(node=0) as a, two.client(node=1) as b:
        a.subscribe("room-a")
        b.subscribe("room-b")

        def sources() -> set[str] | None:
            entries = s.get(_url(two, "/api/apps/1/log"), timeout=10).json()["entries"]
            found = {e["source"] for e in entries if e["kind"] == "subscribed"}
            return found if len(found) == 2 else None

        assert len(_wait(sources, "subscriptions logged by both nodes")) == 2


def test_replay_all_dead_deliveries(cluster: Cluster, receiver: Receiver) -> None:
    s, csrf = signed_in(cluster)
    mine = [False]

    def behaviour(r: Received) -> Answer:
        ours = any(e.get("channel") == "bulk-dead" for e in r.json["events"])
        return (200 if mine[0] or not ours else 500), {}, b"", 0.0

    receiver.behaviour = behaviour
    try:
        with cluster.client() as client:
            client.subscribe("bulk-dead")

            def dead() -> list[dict[str, Any]]:
                page = s.get(_url(cluster, "/api/apps/1/webhooks?status=dead"), timeout=10).json()
                return page["deliveries"]

            (delivery,) = _wait(dead, "the dead delivery")
        url = _url(cluster, "/api/apps/1/webhooks/replay")
        assert s.post(url, json={"status": "dead"}, timeout=10).status_code == 403
        for bad in ({"status": "delivered"}, {}, {"status": 1}):
            r = s.post(url, json=bad, headers={"X-CSRF-Token": csrf}, timeout=10)
            assert r.status_code == 400 and "dead or failed" in r.json()["error"]
        mine[0] = True
        r = s.post(url, json={"status": "dead"}, headers={"X-CSRF-Token": csrf}, timeout=10)
        assert r.json() == {"replayed": 1, "ids": [delivery["id"]]}

        def delivered() -> dict[str, Any] | None:
            d = s.get(_url(cluster, f"/api/apps/1/webhooks/{delivery['id']}"), timeout=10).json()
            return d if d["status"] == "delivered" else None

        detail = _wait(delivered, "the replayed delivery")
        assert [a["status"] for a in detail["attempts"]] == [500, 500, 200]
        assert detail["attempts"][-1]["manual"] is True
    finally:
        receiver.behaviour = lambda r: (200, {}, b"ok", 0.0)
