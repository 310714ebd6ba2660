"""The Beams publish API, publish status, and the customer API (delete a user)."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response

from gateway.api.beams import beams_ctx
from gateway.api.beams.common import BeamsError, app_for, authorised_app, bp, json_body, ok
from gateway.api.beams.devices import check_interest
from gateway.state.devices import MAX_USER_ID_LENGTH
from gateway.state.publishes import new_publish_id

log = logging.getLogger("clarion.beams")

PUBLISH_PREFIX = "/publish_api/v1/instances/<instance_id>/publishes"
MAX_INTERESTS_PER_PUBLISH = 100
MAX_USERS_PER_PUBLISH = 1000
APNS_MAX_PAYLOAD = 4096
WEB_MAX_TTL = 2419200  # Beams: four weeks
MAX_EVENT_NAME = 200  # Pusher's limit on event names
TASK_NAME = "clarion.push.publish"  # workers/push/tasks.py


def _schema(description: str) -> BeamsError:
    return BeamsError(422, "JSON does not match schema", description)


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    """The per-platform sections, checked."""
    payload: dict[str, Any] = {}
    for platform in ("apns", "fcm", "web"):
        if platform in body:
            if not isinstance(body[platform], dict):
                raise _schema(f"{platform} must be an object")
            payload[platform] = body[platform]
    if not payload:
        raise _schema("A publish must contain at least one of apns, fcm or web")
    web = payload.get("web") or {}
    ttl = web.get("time_to_live")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)
                            or not 0 <= ttl <= WEB_MAX_TTL):
        raise _schema(f"web.time_to_live must be an integer from 0 to {WEB_MAX_TTL}")
    if isinstance(web.get("data"), dict) and "pusher" in web["data"]:
        raise _schema("web.data must not contain the key 'pusher'")
    if "apns" in payload:
        size = len(json.dumps(payload["apns"], ensure_ascii=False).encode())
        if size > APNS_MAX_PAYLOAD:
            raise BeamsError(
                413,
                "Payload Too Large",
                f"The apns payload is {size} bytes; APNs accepts {APNS_MAX_PAYLOAD}",
            )
    return payload


def _start(instance_id: str, kind: str, targets: list[str], payload: dict[str, Any]) -> Response:
    ctx = beams_ctx()
    publish_id = new_publish_id()
    ctx.publishes.create(instance_id, publish_id, kind, targets, payload)
    try:
        ctx.celery.send_task(TASK_NAME, args=[instance_id, publish_id, 0], queue="push")  # type: ignore[attr-defined]
    except Exception:
        ctx.redis.delete(ctx.publishes.keys.publish(instance_id, publish_id))
        raise
    ctx.publishes.count_accepted(instance_id)
    return ok({"publishId": publish_id})


def _accept(instance_id: str, max_bytes: int) -> dict[str, Any]:
    authorised_app(instance_id)
    settings = beams_ctx().settings
    if beams_ctx().publishes.rate_limited(instance_id, settings.push.publish_rate_limit):
        raise BeamsError(
            429,
            "Too Many Requests",
            f"At most {settings.push.publish_rate_limit} publishes per second per instance",
            {"Retry-After": "1"},
        )
    return json_body(max_bytes, strict_type=True)


@bp.post(PUBLISH_PREFIX + "/interests")
def publish_to_interests(instance_id: str) -> Response:
    body = _accept(instance_id, beams_ctx().settings.push.max_interests_body_bytes)
    interests = body.get("interests")
    if not isinstance(interests, list) or not interests:
        raise BeamsError(400, "Bad Request", "interests must be a non-empty array")
    if len(interests) > MAX_INTERESTS_PER_PUBLISH:
        raise BeamsError(
            400,
            "Too many interests",
            f"A publish can target at most {MAX_INTERESTS_PER_PUBLISH} interests, "
            f"got {len(interests)}",
        )
    unique = list(dict.fromkeys(check_interest(i) for i in interests))
    if "live" in body:
        raise _schema("live is for publishes to users (it needs to know who is signed in)")
    return _start(instance_id, "interests", unique, _payload(body))


@bp.post(PUBLISH_PREFIX + "/users")
def publish_to_users(instance_id: str) -> Response:
    body = _accept(instance_id, beams_ctx().settings.push.max_users_body_bytes)
    users = body.get("users")
    if not isinstance(users, list) or not users:
        raise BeamsError(400, "Bad Request", "users must be a non-empty array")
    if len(users) > MAX_USERS_PER_PUBLISH:
        raise BeamsError(
            400,
            "Too many users",
            f"A publish can target at most {MAX_USERS_PER_PUBLISH} users, got {len(users)}",
        )
    for user in users:
        if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_ID_LENGTH:
            raise BeamsError(400, "Invalid user id", "User ids are strings of 1 to 164 characters")
    payload = _payload(body)
    if "live" in body:
        payload["live"] = _live(body["live"], app_for(instance_id).max_event_bytes)
    return _start(instance_id, "users", list(dict.fromkeys(users)), payload)


def _live(live: Any, max_bytes: int) -> dict[str, Any]:
    """Clarion's ``live`` extension (deliver live to signed-in users, push to the others):
    ``{"event": name, "data": any JSON}``, sent on ``#server-to-user-{id}`` (docs/push.md)."""
    if not isinstance(live, dict) or set(live) - {"event", "data"}:
        raise _schema('live must be an object {"event": name, "data": ...}')
    event = live.get("event")
    if not isinstance(event, str) or not 1 <= len(event) <= MAX_EVENT_NAME:
        raise _schema(f"live.event must be an event name of 1 to {MAX_EVENT_NAME} characters")
    if event.startswith(("pusher:", "pusher_internal:")):
        raise _schema("live.event may not start with pusher: or pusher_internal:")
    data = live.get("data")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > max_bytes:
        raise BeamsError(413, "Payload Too Large",
                         f"live.data is {len(text.encode())} bytes; the app accepts {max_bytes}")
    return {"event": event, "data": data}


@bp.get(PUBLISH_PREFIX + "/<publish_id>")
def publish_status(instance_id: str, publish_id: str) -> Response:
    authorised_app(instance_id)
    status = beams_ctx().publishes.status(instance_id, publish_id)
    if status is None:
        raise BeamsError(404, "Publish not found", f"No publish {publish_id!r} (or it has expired)")
    return ok(status)


@bp.delete("/customer_api/v1/instances/<instance_id>/users/<path:user_id>")
def delete_user(instance_id: str, user_id: str) -> Response:
    authorised_app(instance_id)
    if not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
        raise BeamsError(400, "Invalid user id", "User ids are strings of 1 to 164 characters")
    beams_ctx().devices.delete_user(instance_id, user_id)
    return ok()
