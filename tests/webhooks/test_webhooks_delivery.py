"""Delivery through real webhooks workers (subprocesses) on the test Redis to a real HTTP
receiver on loopback: signatures, batching, the retry schedule, dead letters, replay,
endpoint disabling, and a worker SIGKILLed mid-delivery with Redis restarted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import pusher
import pytest
import redis
from click.testing import CliRunner

from config.settings import settings_to_env
from gateway.api.app import create_app
from gateway.cli import main as cli
from gateway.embedded_redis import free_port
from gateway.state.keys import Keys
from gateway.webhooks.events import endpoint_id
from gateway.webhooks.store import Store
from tests.api.api_harness import signed
from tests.webhooks.conftest import Nodes
from tests.webhooks.harness import ALL_EVENTS, APP, Receiver, make_settings, webhook

SDK = pusher.Pusher(app_id=APP["id"], key=APP["key"], secret=APP["secret"])
WHSEC = base64.b64encode(b"standard-webhooks-secret-key").decode()


def validate(req) -> dict:
    """The official SDK's check, and the exact Content-Type the Node SDK insists on."""
    assert req.headers["content-type"] == "application/json"
    body = SDK.validate_webhook(req.headers["x-pusher-key"], req.headers["x-pusher-signature"],
                                req.body)
    assert body is not None, req
    return body


def verify_standard(req) -> None:
    msg_id, ts = req.headers["webhook-id"], req.headers["webhook-timestamp"]
    assert abs(int(ts) - time.time()) < 300
    digest = hmac.new(base64.b64decode(WHSEC), f"{msg_id}.{ts}.".encode() + req.body,
                      hashlib.sha256).digest()
    assert f"v1,{base64.b64encode(digest).decode()}" in req.headers["webhook-signature"].split()


def store_for(settings) -> Store:
    return Store(redis.Redis.from_url(settings.redis.url), Keys(settings.redis.key_prefix),
                 settings)


def wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    assert predicate(), f"timed out waiting for {what}"


def test_every_event_type_arrives_signed(redis_url, key_prefix, receiver, start_worker, loop):
    settings = make_settings(redis_url, key_prefix, [
        webhook(receiver.url("/all"), *ALL_EVENTS),
        webhook(receiver.url("/std"), "channel_occupied", standard_webhooks=True,
                signing_secret="whsec_" + WHSEC, headers={"X-Tenant": "t1"}),
    ])
    start_worker(settings)
    nodes = Nodes(settings)
    node = nodes.node("A")

    async def go():
        node.channel_subscription_changed("1", "presence-lobby", +1)
        node.member_added("1", "presence-lobby", "alice")
        node.client_event("1", "presence-lobby", "client-typing", {"on": True}, "1.2", "alice")
        node.cache_miss("1", "cache-prices")
        await nodes.flush()
        await asyncio.sleep(0.6)  # subscription_count is coalesced over 0.2 s
        node.member_removed("1", "presence-lobby", "alice")
        node.channel_subscription_changed("1", "presence-lobby", -1)
        await nodes.close()

    loop.run_until_complete(go())
    assert receiver.wait_for(lambda r: len(r.events("/all")) >= 8, 20), [
        (r.path, r.names) for r in receiver.requests]
    counts = [e["subscription_count"] for e in receiver.events("/all")
              if e["name"] == "subscription_count"]
    assert counts == [1, 0]
    events = {e["name"]: e for e in receiver.events("/all")}
    assert events == {
        "channel_occupied": {"name": "channel_occupied", "channel": "presence-lobby"},
        "member_added": {"name": "member_added", "channel": "presence-lobby",
                         "user_id": "alice"},
        "client_event": {"name": "client_event", "channel": "presence-lobby",
                         "event": "client-typing", "data": '{"on":true}', "socket_id": "1.2",
                         "user_id": "alice"},
        "cache_miss": {"name": "cache_miss", "channel": "cache-prices"},
        "subscription_count": {"name": "subscription_count", "channel": "presence-lobby",
                               "subscription_count": 0},
        "member_removed": {"name": "member_removed", "channel": "presence-lobby",
                           "user_id": "alice"},
        "channel_vacated": {"name": "channel_vacated", "channel": "presence-lobby"},
    }
    assert len(receiver.events("/all")) == 8
    for req in receiver.requests:
        body = validate(req)
        assert abs(body["time_ms"] - req.at * 1000) < 5000
    std = [r for r in receiver.requests if r.path == "/std"]
    assert len(std) == 1 and std[0].names == ["channel_occupied"]
    verify_standard(std[0])
    assert std[0].headers["x-tenant"] == "t1"
    assert std[0].headers["webhook-id"] == std[0].delivery_id


def test_batching_and_channel_filters(redis_url, key_prefix, receiver, start_worker, loop):
    settings = make_settings(redis_url, key_prefix, [
        webhook(receiver.url("/all"), "client_event"),
        webhook(receiver.url("/private"), "client_event", channel_prefix="private-"),
    ], batch_size=20, batch_window=0.3)
    start_worker(settings)
    nodes = Nodes(settings)
    node = nodes.node("A")

    async def go():
        for i in range(45):
            ch = "private-a" if i % 3 == 0 else "public-b"
            node.client_event("1", ch, "client-n", str(i), "1.1")
        await nodes.close()

    loop.run_until_complete(go())
    assert receiver.wait_for(lambda r: len(r.events("/all")) >= 45
                             and len(r.events("/private")) >= 15, 20)
    time.sleep(0.5)
    all_data = sorted(int(e["data"]) for e in receiver.events("/all"))
    assert all_data == list(range(45))
    private = sorted(int(e["data"]) for e in receiver.events("/private"))
    assert private == list(range(0, 45, 3))
    sizes = [len(r.json["events"]) for r in receiver.requests if r.path == "/all"]
    assert max(sizes) == 20 and len(sizes) <= 5, sizes
    for req in receiver.requests:
        validate(req)


def test_failures_are_retried_dead_lettered_then_replayed(redis_url, key_prefix, receiver,
                                                          start_worker, loop):
    down_port = free_port()
    broken = {"on": True}

    def behaviour(req):
        if not broken["on"]:
            return 200, {}, b"ok", 0
        return {
            "/slow": (200, {}, b"late", 1.5),
            "/500": (500, {}, b"boom " * 2000, 0),
            "/429": (429, {"Retry-After": "1"}, b"slow down", 0),
            "/301": (301, {"Location": receiver.url("/elsewhere")}, b"", 0),
        }.get(req.path, (200, {}, b"ok", 0))

    receiver.behaviour = behaviour
    urls = {name: receiver.url(f"/{name}") for name in ("slow", "500", "429", "301")}
    urls["down"] = f"http://127.0.0.1:{down_port}/down"
    settings = make_settings(redis_url, key_prefix,
                             [webhook(u, "cache_miss") for u in urls.values()],
                             timeout=1.0, retry_schedule=[0.3, 0.3], max_response_bytes=100)
    start_worker(settings, concurrency=4)
    nodes = Nodes(settings)

    async def go():
        nodes.node("A").cache_miss("1", "cache-x")
        await nodes.close()

    loop.run_until_complete(go())
    store = store_for(settings)
    wait(lambda: store.counts("1")["dead"] == 5, 30, "five dead deliveries")
    dead = {d.url: store.load(d.id) for d in store.list("1", "dead")}
    for name, url in urls.items():
        d = dead[url]
        assert [a["n"] for a in d.attempts] == [1, 2, 3], name
        assert d.reason == "retry schedule exhausted"
        assert d.attempts[-1]["next_attempt_ms"] is None
        assert all(a["next_attempt_ms"] for a in d.attempts[:2])
    kinds = {name: {(a["status"], a["error"]) for a in dead[url].attempts}
             for name, url in urls.items()}
    assert kinds == {"slow": {(None, "timeout")}, "500": {(500, None)},
                     "429": {(429, None)}, "301": {(301, None)}, "down": {(None, "connect")}}
    assert len(dead[urls["500"]].attempts[0]["body"]) == 100  # truncated
    assert dead[urls["301"]].attempts[0]["location"].endswith("/elsewhere")
    assert not [r for r in receiver.requests if r.path == "/elsewhere"]  # never followed
    tries = dead[urls["429"]].attempts
    gaps = [b["at_ms"] - a["at_ms"] for a, b in zip(tries, tries[1:], strict=False)]
    assert all(g >= 1000 for g in gaps), gaps  # Retry-After: 1 beat the 0.3 s schedule
    ids = {r.path: {x.delivery_id for x in receiver.requests if x.path == r.path}
           for r in receiver.requests}
    assert all(len(v) == 1 for v in ids.values())  # one id across every attempt

    # The receivers are fixed; replay: one through the CLI, the rest through the HTTP API.
    broken["on"] = False
    down = Receiver(port_=down_port)
    try:
        env = settings_to_env(settings)
        one = dead[urls["down"]].id
        res = CliRunner().invoke(cli, ["webhooks", "replay", one], env=env)
        assert res.exit_code == 0 and "replayed" in res.output, res.output
        flask_app = create_app(settings)
        client = flask_app.test_client()
        r = signed(client, "POST", "/apps/1/webhooks/replay", APP, {"status": "dead"})
        assert r.status_code == 200 and r.get_json()["replayed"] == 4, r.get_json()
        wait(lambda: store.counts("1")["delivered"] == 5, 20, "five delivered")
        assert down.wait_for(lambda d: len(d.delivered()) == 1, 5)
        for req in [*receiver.delivered(), *down.delivered()]:
            validate(req)  # re-stamped time_ms: fresh, so the SDK accepts it
        shown = signed(client, "GET", f"/apps/1/webhooks/deliveries/{one}", APP).get_json()
        assert shown["status"] == "delivered" and len(shown["attempts"]) == 4
        assert shown["attempts"][-1]["manual"] is True
        listed = signed(client, "GET", "/apps/1/webhooks/deliveries", APP,
                        params={"status": "delivered"}).get_json()
        assert len(listed["deliveries"]) == 5
        assert client.get("/apps/1/webhooks/deliveries").status_code == 401
        res = CliRunner().invoke(cli, ["webhooks", "show", one], env=env)
        assert res.exit_code == 0 and "#4" in res.output and "delivered" in res.output
        flask_app.extensions["clarion"].close()
    finally:
        down.close()


def test_gone_and_long_failing_endpoints_are_disabled(redis_url, key_prefix, receiver,
                                                      start_worker, loop):
    receiver.behaviour = lambda req: {"/gone": (410, {}, b"", 0),
                                      "/bad": (500, {}, b"", 0)}.get(req.path, (200, {}, b"", 0))
    settings = make_settings(redis_url, key_prefix, [
        webhook(receiver.url("/gone"), "cache_miss"),
        webhook(receiver.url("/bad"), "cache_miss"),
    ], retry_schedule=[0.6, 0.6, 0.6], disable_after_hours=1.0 / 3600)  # one second
    start_worker(settings)
    nodes = Nodes(settings)

    async def report():
        nodes.node("A").cache_miss("1", "cache-x")
        await nodes.flush()

    loop.run_until_complete(report())
    store = store_for(settings)
    gone_id = endpoint_id("1", receiver.url("/gone"))
    bad_id = endpoint_id("1", receiver.url("/bad"))
    wait(lambda: store.counts("1")["dead"] == 2, 20, "both dead")
    eps = {e["endpoint_id"]: e for e in store.endpoints("1")}
    assert eps[gone_id]["disabled"] and eps[gone_id]["disabled_reason"] == "410 Gone"
    assert eps[bad_id]["disabled"] and "failing" in eps[bad_id]["disabled_reason"]
    gone = [r for r in receiver.requests if r.path == "/gone"]
    assert len(gone) == 1  # 410: no retry
    # A disabled endpoint gets no request; its events are kept as dead deliveries.
    before = len(receiver.requests)
    loop.run_until_complete(report())
    wait(lambda: store.counts("1")["dead"] == 4, 10, "kept as dead")
    assert len(receiver.requests) == before
    reasons = {d.reason for d in store.list("1", "dead")}
    assert "endpoint disabled" in reasons
    # The operator fixes the receiver, enables the endpoints, replays everything.
    receiver.behaviour = lambda req: (200, {}, b"", 0)
    env = settings_to_env(settings)
    res = CliRunner().invoke(cli, ["webhooks", "endpoints"], env=env)
    assert res.exit_code == 0 and res.output.count("DISABLED") == 2, res.output
    flask_app = create_app(settings)
    client = flask_app.test_client()
    r = signed(client, "POST", f"/apps/1/webhooks/endpoints/{gone_id}/enable", APP)
    assert r.status_code == 200
    res = CliRunner().invoke(cli, ["webhooks", "enable", bad_id], env=env)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["webhooks", "replay", "--all"], env=env)
    assert res.exit_code == 0 and "replayed 4" in res.output, res.output
    wait(lambda: store.counts("1")["delivered"] == 4, 20, "all delivered")
    flask_app.extensions["clarion"].close()
    loop.run_until_complete(nodes.close())


@pytest.mark.slow
def test_worker_killed_mid_delivery_and_redis_restarted(redis_server, redis_url, key_prefix,
                                                        receiver, start_worker, loop):
    """SIGKILL the whole worker while a POST is in flight, restart Redis, start a new worker:
    every delivery still arrives; the receiver, deduplicating by id, sees each event once."""
    first = {"held": False}

    def behaviour(req):
        if not first["held"]:
            first["held"] = True
            return 200, {}, b"", 3.0  # the worker dies while waiting for this answer
        return 200, {}, b"", 0

    receiver.behaviour = behaviour
    settings = make_settings(redis_url, key_prefix, [webhook(receiver.url(), "client_event")],
                             batch_size=2, timeout=5.0, lease=1.0)
    worker = start_worker(settings)
    nodes = Nodes(settings)
    node = nodes.node("A")

    async def send(start, n):
        for i in range(start, start + n):
            node.client_event("1", f"ch-{i % 3}", "client-n", str(i), "1.1")
        await nodes.flush()

    loop.run_until_complete(send(0, 6))
    assert receiver.wait_for(lambda r: len(r.requests) >= 1, 15)
    worker.kill()  # mid-delivery: the first POST is still waiting for its answer
    store = store_for(settings)
    pending = store.counts("1")
    assert pending["delivered"] < 3
    time.sleep(1.1)  # let the AOF (appendfsync everysec) take the last writes
    redis_server.restart()
    loop.run_until_complete(send(6, 4))  # reported while no worker runs
    start_worker(settings)
    wait(lambda: store.counts("1")["delivered"] == 5, 40, "all five delivered")
    time.sleep(0.5)
    data = [int(e["data"]) for e in receiver.events()]
    assert sorted(data) == list(range(10))  # once per id: no event in two deliveries
    ids = {r.delivery_id for r in receiver.requests}
    assert ids == {d.id for d in store.list("1", "delivered")}
    loop.run_until_complete(nodes.close())


def test_apps_added_with_clarion_apps_get_their_webhooks(redis_url, key_prefix, receiver,
                                                         start_worker, loop):
    """An app that only exists in the Redis app store (gateway/state/apps.py) is seen by the
    reporter (through the node's app directory) and by the workers (their app resolver)."""
    from config.settings import AppSettings
    from gateway.state.apps import AppStore

    settings = make_settings(redis_url, key_prefix, [])
    start_worker(settings)
    stored = AppSettings(id="77", key="stored-key", secret="stored-secret",
                         webhooks=[{"url": receiver.url("/stored"), "events": ["cache_miss"]}])
    sync = redis.Redis.from_url(redis_url)
    AppStore(sync, Keys(key_prefix)).put(stored)
    nodes = Nodes(settings)
    node = nodes.node("A")
    node.app_by_id = {"77": stored}.get  # what the node's AppDirectory answers

    async def go():
        node.cache_miss("77", "cache-x")
        await nodes.close()

    loop.run_until_complete(go())
    assert receiver.wait_for(lambda r: len(r.delivered()) == 1, 15), (
        sync.xrange(Keys(key_prefix).wh_events), sync.keys(f"{key_prefix}*"))
    req = receiver.delivered()[0]
    sdk = pusher.Pusher(app_id="77", key="stored-key", secret="stored-secret")
    assert sdk.validate_webhook(req.headers["x-pusher-key"], req.headers["x-pusher-signature"],
                                req.body)
    sync.close()
