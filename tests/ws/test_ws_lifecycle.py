"""Process lifecycle: `run_node` in a subprocess with SIGTERM, dead-node sweeps, Redis outages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from ws_harness import APP_ID, Bus, NodeThread, PusherClient, make_settings, wait_until

from config import settings_to_env
from gateway.embedded_redis import EmbeddedRedis
from gateway.state.keys import Keys
from gateway.state.presence import Presence

RUN_NODE = ("from config import load_settings; from gateway.ws.node import run_node; "
            "raise SystemExit(run_node(load_settings()))")


def ready(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_sigterm_shuts_down_gracefully(redis_url: str, key_prefix: str, start_node,
                                       redis_client: redis.Redis) -> None:
    settings = make_settings(redis_url, key_prefix)
    env = {**os.environ, **settings_to_env(settings)}
    proc = subprocess.Popen([sys.executable, "-c", RUN_NODE], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = settings.websocket.port
        info = wait_until(lambda: ready(port), timeout=15)
        node_id = info["node"]
        watcher_node = start_node()  # another node on the same Redis sees the departure
        watcher = PusherClient(watcher_node.url)
        watcher.established()
        watcher.subscribe_presence("presence-lobby", "watcher")

        leaving = PusherClient(f"ws://127.0.0.1:{port}")
        leaving.established()
        leaving.subscribe_presence("presence-lobby", "u1", {"n": 1})
        watcher.expect("pusher_internal:member_added", "presence-lobby")
        keys = Keys(key_prefix)
        assert redis_client.zscore(keys.nodes, node_id) is not None

        proc.send_signal(signal.SIGTERM)
        # (leaving may first see a late member_added for the watcher: benign, pusher-js
        # ignores a member it already has)
        err = leaving.wait_for("pusher:error")
        assert err["data"]["code"] == 4200
        assert leaving.closed().code == 4200
        removed = watcher.wait_for("pusher_internal:member_removed", "presence-lobby")
        assert json.loads(removed["data"]) == {"user_id": "u1"}
        assert proc.wait(15) == 0
        assert redis_client.zscore(keys.nodes, node_id) is None
        assert redis_client.hkeys(keys.presence_members(APP_ID, "presence-lobby")) == [b"watcher"]
        watcher.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dead_node_is_swept_and_its_members_removed(
    node: NodeThread, client, redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    keys = Keys(key_prefix)

    async def ghost_joins() -> None:
        r = aioredis.Redis.from_url(redis_url)
        await Presence(r, keys, "dead-node").join(APP_ID, "presence-g", "1.1", "ghost", None, 100)
        await r.aclose()

    asyncio.run(ghost_joins())
    c = client()
    data = c.subscribe_presence("presence-g", "alive")
    assert sorted(data["presence"]["ids"]) == ["alive", "ghost"]
    # The dead node's last heartbeat is older than node_timeout.
    redis_client.zadd(keys.nodes, {"dead-node": int((time.time() - 3600) * 1000)})
    removed = c.expect("pusher_internal:member_removed", "presence-g", timeout=5)
    assert json.loads(removed["data"]) == {"user_id": "ghost"}
    wait_until(lambda: redis_client.zscore(keys.nodes, "dead-node") is None)


@pytest.fixture
def own_redis(tmp_path: Path):
    """A Redis of this test's own: it is stopped and restarted."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_redis_restart(own_redis: EmbeddedRedis, key_prefix: str) -> None:
    node = NodeThread(make_settings(own_redis.url, key_prefix)).start()
    try:
        client = redis.Redis.from_url(own_redis.url)
        bus = Bus(client, key_prefix)
        c = PusherClient(node.url)
        c.established()
        c.subscribed("news")
        # Accepted but never published (its worker died with Redis): found on reconcile.
        (serial,) = bus.accept("news", [("lost", '{"n":1}')])
        client.close()

        own_redis.stop()
        c.subscribe("other")
        err = c.expect("pusher:subscription_error", "other", timeout=15)
        assert err["data"]["status"] == 503
        c.send("pusher:ping", {})  # the node itself is fine
        c.expect("pusher:pong")

        own_redis.start()
        assert c.expect("lost", "news", timeout=15)["data"] == '{"n":1}'
        client = redis.Redis.from_url(own_redis.url)
        bus = Bus(client, key_prefix)
        c.subscribed("other")
        (s2,) = bus.accept("news", [("after", "{}")])
        bus.publish("news", "after", "{}", s2)
        assert c.expect("after", "news")["data"] == "{}"
        client.close()
        c.close()
    finally:
        node.stop()


def test_resync_after_being_swept(node: NodeThread, client, redis_url: str, key_prefix: str,
                                  redis_client: redis.Redis) -> None:
    """What the node does when Redis answers again after its heartbeats failed: a survivor
    may have swept it, so it rewrites its state and drops rows of sockets gone meanwhile."""
    keys = Keys(key_prefix)
    node_id = node.node.node_id
    c = client()
    c.subscribed("busy")
    c.subscribe_presence("presence-r", "u1")
    occ = keys.occupancy(APP_ID, node_id)
    wait_until(lambda: redis_client.hget(occ, "busy") == b"1")

    async def ghost_row() -> None:  # a socket of this node that closed while Redis was down
        r = aioredis.Redis.from_url(redis_url)
        await Presence(r, keys, node_id).join(APP_ID, "presence-r", "9.9", "ghost", None, 100)
        await r.aclose()

    asyncio.run(ghost_row())
    # A survivor's sweep removed this node's occupancy and u1's membership.
    redis_client.delete(occ)
    redis_client.hdel(keys.presence_members(APP_ID, "presence-r"), "u1")
    redis_client.hdel(keys.presence_counts(APP_ID, "presence-r"), "u1")
    redis_client.hdel(keys.presence_sockets(APP_ID, "presence-r"), c.socket_id)

    node.call(node.node._resync)
    removed = c.expect("pusher_internal:member_removed", "presence-r")
    assert json.loads(removed["data"]) == {"user_id": "ghost"}
    wait_until(lambda: redis_client.hget(occ, "busy") == b"1")
    assert redis_client.hkeys(keys.presence_members(APP_ID, "presence-r")) == [b"u1"]


def ready_status(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ready_is_503_while_redis_is_down(own_redis: EmbeddedRedis, key_prefix: str) -> None:
    node = NodeThread(make_settings(own_redis.url, key_prefix)).start()
    port = node.settings.websocket.port
    try:
        status, body = ready_status(port)
        assert status == 200 and body["status"] == "ok"
        own_redis.stop()
        wait_until(lambda: ready_status(port)[0] == 503, timeout=10)
        status, body = ready_status(port)
        assert body["status"] == "unavailable"
        assert body["error"].startswith("Redis"), body
        assert body["node"] == node.node.node_id
        # A client still connects (the node itself is up); /ready tells balancers to prefer
        # a node that can reach Redis.
        own_redis.start()
        wait_until(lambda: ready_status(port)[0] == 200, timeout=15)
        assert ready_status(port)[1]["status"] == "ok"
    finally:
        node.stop()
