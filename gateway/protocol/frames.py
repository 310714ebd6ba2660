"""Server-to-client Pusher frames, built as the exact JSON bytes sent on the wire.

Rules that clients depend on (reference §1.2, §10):
- every server event's ``data`` is a JSON *string*, except ``pusher:error`` (an object: pysher
  reads ``data['code']``) and ``pusher:subscription_error`` (soketi's object shape);
- ``pusher:connection_established`` is the first frame, with a positive activity_timeout;
- events published over HTTP are relayed with their ``data`` string untouched (encrypted
  channels depend on it byte for byte).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.errors import ConnectionError_, SubscriptionError


def _frame(event: str, data: Any = None, channel: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"event": event}
    if channel is not None:
        body["channel"] = channel
    if data is not None:
        body["data"] = data
    body.update(extra)
    return orjson.dumps(body)


def _json_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    payload = {"socket_id": socket_id, "activity_timeout": activity_timeout}
    return _frame("pusher:connection_established", _json_str(payload))


def error(code: int | None, message: str) -> bytes:
    return _frame("pusher:error", {"code": code, "message": message})


def from_error(exc: ConnectionError_) -> bytes:
    return error(exc.code, exc.message)


def subscription_error(exc: SubscriptionError) -> bytes:
    data = {"type": exc.type, "error": exc.message, "status": exc.status}
    return _frame("pusher:subscription_error", data, exc.channel)


def _position(serial: int | None) -> dict[str, int]:
    """The top-level ``serial`` of docs/resume.md, for subscriptions that asked for it."""
    return {} if serial is None else {"serial": serial}


def subscription_succeeded(channel: str, serial: int | None = None) -> bytes:
    return _frame("pusher_internal:subscription_succeeded", "{}", channel, **_position(serial))


def presence_subscription_succeeded(channel: str, members: dict[str, Any],
                                    serial: int | None = None) -> bytes:
    """``members`` maps user id (string) to user_info; it includes the joining user."""
    presence = {"ids": list(members), "hash": members, "count": len(members)}
    return _frame("pusher_internal:subscription_succeeded", _json_str({"presence": presence}),
                  channel, **_position(serial))


RESUME_FAILED = "clarion:resume_failed"


def resume_failed(channel: str, reason: str, serial: int) -> bytes:
    """The missed events after ``serial`` cannot all be sent (docs/resume.md)."""
    return _frame(RESUME_FAILED, _json_str({"reason": reason, "serial": serial}), channel)


def member_added_data(user_id: str, user_info: Any) -> str:
    payload: dict[str, Any] = {"user_id": user_id}
    if user_info is not None:
        payload["user_info"] = user_info
    return _json_str(payload)


def member_removed_data(user_id: str) -> str:
    return _json_str({"user_id": user_id})


def pong() -> bytes:
    return _frame("pusher:pong", "{}")


def ping() -> bytes:
    return _frame("pusher:ping", "{}")


def channel_event(
    event: str, channel: str, data: Any, user_id: str | None = None,
    serial: int | None = None,
) -> bytes:
    """An event on a channel. ``data`` is relayed as given (a string from the HTTP API);
    ``serial`` only for subscriptions that asked for positions (docs/resume.md)."""
    if user_id is None and serial is None:
        return _frame(event, data, channel)
    if serial is None:
        return _frame(event, data, channel, user_id=user_id)
    return _frame(event, data, channel, serial=serial)


def signin_success(user_data: str) -> bytes:
    return _frame("pusher:signin_success", {"user_data": user_data})


def cache_miss(channel: str) -> bytes:
    return _frame("pusher:cache_miss", None, channel)


def watchlist_events(online: list[str] | None = None, offline: list[str] | None = None) -> bytes:
    """``pusher_internal:watchlist_events`` (no channel): ``{"events": [{"name": "online",
    "user_ids": [...]}, {"name": "offline", ...}]}`` as a JSON string."""
    events = []
    if online:
        events.append({"name": "online", "user_ids": online})
    if offline:
        events.append({"name": "offline", "user_ids": offline})
    return _frame("pusher_internal:watchlist_events", _json_str({"events": events}))
