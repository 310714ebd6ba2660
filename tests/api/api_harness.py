"""Helpers for the REST API tests: signed requests, the SDK without its client-side checks,
readers for the Celery queue and the bus, and node-side state writers. Fixtures are in
conftest.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import orjson
import pusher
import redis
import redis.asyncio

from config.settings import AppSettings
from gateway.protocol.signatures import sign_rest_request
from gateway.state.keys import Keys
from gateway.state.occupancy import NodeOccupancy
from gateway.state.presence import Presence
from gateway.state.registry import Registry
from gateway.state.riders import decode
from workers.tasks.live import TASK_NAME as DELIVER_TASK

APP = {"id": "1", "key": "app-key", "secret": "app-secret"}
DISABLED = {"id": "2", "key": "off-key", "secret": "off-secret", "enabled": False}
# An app with its own log limits and idempotency window (tighter than the deployment's).
SMALL = {"id": "3", "key": "small-key", "secret": "small-secret",
         "history": {"max_events": 3, "retention": 60}, "idempotency_window": 1}


def signed(
    client: Any,
    method: str,
    path: str,
    app: AppSettings | dict[str, Any],
    body: Any = None,
    params: dict[str, str] | None = None,
    *,
    raw: bytes | None = None,
    timestamp: int | None = None,
    secret: str | None = None,
):
    """Send a request signed the Pusher way through the Flask test client."""
    a = app if isinstance(app, dict) else app.model_dump()
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    q = sign_rest_request(
        a["key"], secret or a["secret"], method, path, params or {}, data,
        timestamp if timestamp is not None else int(time.time()),
    )
    return client.open(
        path, method=method, query_string=q, data=data, content_type="application/json"
    )


def sdk_raw(sdk: pusher.Pusher, method: str, path: str, params: dict[str, Any]) -> Any:
    """Send a request built and signed by the SDK, skipping its client-side validation."""
    from pusher.http import Request

    client = sdk._pusher_client
    return client.http.send_request(Request(client, method, path, params))


def sdk_history(sdk: pusher.Pusher, channel: str, **params: Any) -> Any:
    """GET the channel's History API page the way an SDK's generic GET does it (the Python
    SDK has no public one: its Request object, signed, as ``pusher.get`` in Node or PHP)."""
    path = f"/apps/{sdk._pusher_client.app_id}/channels/{channel}/events"
    return sdk_raw(sdk, "GET", path, {k: str(v) for k, v in params.items()})


def queued_tasks(r: redis.Redis, prefix: str, queue: str = "live") -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in a Celery queue, oldest first; for
    ``live``, then the requests riding on a queued task (gateway/state/riders.py), each as
    the task it would have queued."""
    out = []
    for raw in reversed(r.lrange(f"{prefix}{queue}", 0, -1)):
        msg = json.loads(raw)
        body = msg["body"]
        if msg["properties"].get("body_encoding") == "base64":  # kombu's default
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        out.append((msg["headers"]["task"], args))
    if queue == "live":
        keys = Keys(prefix)
        out += [(DELIVER_TASK, [app_id, events]) for app_id, events in
                decode(r.lrange(keys.live_pending, 0, -1))]
    return out


def clear_live(r: redis.Redis, prefix: str) -> None:
    """Empty the ``live`` queue and forget its riders, so the next request queues a task."""
    keys = Keys(prefix)
    r.delete(f"{prefix}live", keys.live_armed, keys.live_pending)


class BusReader:
    def __init__(self, r: redis.Redis, channel: str) -> None:
        self.pubsub = r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=1.0)  # the subscribe confirmation

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is not None:
                return orjson.loads(msg["data"])
        raise AssertionError("no bus message within the timeout")

    def close(self) -> None:
        self.pubsub.close()


class NodeState:
    """Writes heartbeats, occupancy and presence the way a WebSocket node does
    (gateway/state, asyncio client)."""

    def __init__(self, url: str, keys: Keys, node_id: str = "node-a") -> None:
        self.url = url
        self.keys = keys
        self.node_id = node_id

    def _run(self, fn: Any) -> Any:
        async def main() -> Any:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                return await fn(client)
            finally:
                await client.aclose()

        return asyncio.run(main())

    def heartbeat(self) -> None:
        self._run(lambda c: Registry(c, self.keys, self.node_id, 10.0).heartbeat())

    def subscribe(self, app_id: str, channel: str, count: int) -> None:
        self._run(lambda c: NodeOccupancy(c, self.keys, self.node_id).set(app_id, channel, count))

    def join(self, app_id: str, channel: str, socket_id: str, user_id: str, info: Any = None):
        return self._run(
            lambda c: Presence(c, self.keys, self.node_id).join(
                app_id, channel, socket_id, user_id, info or {}, 100
            )
        )
