"""Client-to-server Pusher messages: one text frame in, one typed message out.

Liberal in what it accepts (pusher-js sends objects, pysher sends ``"data": ""`` and omits
``auth`` on public channels); every refusal is an ``InvalidMessage`` with a message that says
what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.protocol.depth import MAX_JSON_DEPTH, deeper_than
from gateway.protocol.errors import InvalidMessage
from gateway.protocol.names import is_socket_id


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """``clarion`` in ``pusher:subscribe`` (docs/resume.md): positions wanted, and where to
    resume from (``serial``) with the previous connection's socket id."""

    serial: int | None = None
    socket_id: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    auth: str | None = None
    channel_data: str | None = None
    resume: ResumeRequest | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class ClientEvent:
    event: str
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class Signin:
    auth: str
    user_data: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A ``pusher:*`` event this server does not know; ignored, as real Pusher does."""

    event: str


ClientMessage = Ping | Pong | Subscribe | Unsubscribe | ClientEvent | Signin | UnknownEvent


def parse(text: str | bytes) -> ClientMessage:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidMessage("Invalid message format: the frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise InvalidMessage("Invalid message format: the frame must be a JSON object")
    event = frame.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidMessage("Invalid message format: missing event name")
    parser = _PARSERS.get(event)
    if parser is not None:
        return parser(frame)
    if event.startswith("client-"):
        return _client_event(frame, event)
    return UnknownEvent(event)


def _data_object(frame: dict[str, Any], event: str) -> dict[str, Any]:
    data = frame.get("data")
    if isinstance(data, str):
        # Some clients double-encode pusher:* data as they would server events.
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            data = None
    if not isinstance(data, dict):
        raise InvalidMessage(f"Invalid message format: {event} needs a data object")
    return data


def _optional_str(data: dict[str, Any], key: str, event: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(f"Invalid message format: {event} {key} must be a string")
    return value


def _channel(data: dict[str, Any], event: str) -> str:
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidMessage(f"Invalid message format: {event} needs a channel name")
    return channel


def _subscribe(frame: dict[str, Any]) -> Subscribe:
    data = _data_object(frame, "pusher:subscribe")
    auth = _optional_str(data, "auth", "pusher:subscribe")
    channel_data = data.get("channel_data")
    if channel_data is not None and not isinstance(channel_data, str):
        # pusher-js always sends the string the auth endpoint returned; an object cannot be
        # verified (its serialisation is not the one that was signed).
        raise InvalidMessage("Invalid message format: channel_data must be a JSON string")
    return Subscribe(_channel(data, "pusher:subscribe"), auth or None, channel_data,
                     _resume(data.get("clarion")))


RESUME_VERSION = 1
MAX_SERIAL = 2**53  # serials are exact JavaScript numbers


def _resume(value: Any) -> ResumeRequest | None:
    """``clarion`` of a subscribe: None (a plain subscription) unless it asks for version 1."""
    if not isinstance(value, dict) or type(value.get("v")) is not int:
        return None
    if value["v"] != RESUME_VERSION:
        return None
    serial = value.get("serial")
    if serial is not None and (type(serial) is not int or not 0 <= serial < MAX_SERIAL):
        raise InvalidMessage("Invalid message format: clarion.serial must be an integer "
                             f"from 0 to 2^53 (a serial the server sent), not {serial!r:.40}")
    socket_id = value.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise InvalidMessage("Invalid message format: clarion.socket_id must be a socket id "
                             f"like 123.456, not {socket_id!r:.40}")
    return ResumeRequest(serial, socket_id)


def _unsubscribe(frame: dict[str, Any]) -> Unsubscribe:
    return Unsubscribe(_channel(_data_object(frame, "pusher:unsubscribe"), "pusher:unsubscribe"))


def _signin(frame: dict[str, Any]) -> Signin:
    data = _data_object(frame, "pusher:signin")
    auth = _optional_str(data, "auth", "pusher:signin")
    user_data = _optional_str(data, "user_data", "pusher:signin")
    if not auth or not user_data:
        raise InvalidMessage("Invalid message format: pusher:signin needs auth and user_data")
    return Signin(auth, user_data)


def _client_event(frame: dict[str, Any], event: str) -> ClientEvent:
    channel = frame.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidMessage("Invalid message format: a client event needs a channel")
    data = frame.get("data")
    # Relayed data is encoded again (size check, bus, webhooks): it must be encodable.
    if isinstance(data, dict | list) and deeper_than(data):
        raise InvalidMessage(f"Invalid message format: client event data is nested deeper "
                             f"than {MAX_JSON_DEPTH} levels")
    return ClientEvent(event, channel, data)


_PARSERS = {
    "pusher:ping": lambda frame: Ping(),
    "pusher:pong": lambda frame: Pong(),
    "pusher:subscribe": _subscribe,
    "pusher:unsubscribe": _unsubscribe,
    "pusher:signin": _signin,
}
