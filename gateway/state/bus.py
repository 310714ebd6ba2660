"""The bus between workers, API and WebSocket nodes: one Redis pub/sub channel, ``P bus``.

Every node subscribes to it and drops what has no local subscriber. Messages are orjson
objects; ``t`` says which kind:

- ``{"t": "e", "a": app, "c": channel, "e": event, "d": data, "s": serial|null,
  "x": socket_id|null, "u": user_id|null}``: an event for a channel's subscribers. ``s`` is
  the channel serial (events from the API); server-made events (member_added/removed) carry
  no serial and are not ordered against them. ``x`` is the socket to leave out. ``u`` is the
  sending user's id, added on presence client events.
- ``{"t": "b", "a": app, "ev": [[channel, event, data, exclude|null, serial], ...]}``: the
  events one API request accepted, in one message (as the live task received them): one
  PUBLISH and one decode per request instead of per event. Each is handled as an ``e``.
- ``{"t": "terminate", "a": app, "u": user_id}``: close every connection signed in as the user.
- ``{"t": "apps", "a": app}``: the app changed in the Redis app store (``clarion apps``):
  nodes reload their apps now (and close the app's connections with 4003 if it is disabled).
- ``{"t": "w", "a": app, "u": user_id, "on": bool}``: a user came online (signed in on its
  first connection anywhere) or went offline (its last one left): nodes send
  ``pusher_internal:watchlist_events`` to the connections watching it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

EVENT = "e"
BATCH = "b"
TERMINATE = "terminate"
APPS = "apps"
WATCH = "w"


@dataclass(frozen=True, slots=True)
class BusEvent:
    app_id: str
    channel: str
    event: str
    data: Any
    serial: int | None = None
    exclude: str | None = None
    user_id: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "t": EVENT,
                "a": self.app_id,
                "c": self.channel,
                "e": self.event,
                "d": self.data,
                "s": self.serial,
                "x": self.exclude,
                "u": self.user_id,
            }
        )


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events of one app accepted together (decoded: see :func:`encode_batch`)."""

    app_id: str
    events: list[BusEvent]


def encode_batch(app_id: str, events: Sequence[Sequence[Any]]) -> bytes:
    """The ``b`` message for ``events`` given as ``[channel, event, data, exclude, serial]``."""
    return orjson.dumps({"t": BATCH, "a": app_id, "ev": events})


def _batch(app_id: str, events: list[list[Any]]) -> EventBatch:
    return EventBatch(app_id, [
        BusEvent(app_id, channel, event, data, int(serial), exclude or None)
        for channel, event, data, exclude, serial in events
    ])


@dataclass(frozen=True, slots=True)
class Terminate:
    app_id: str
    user_id: str

    def encode(self) -> bytes:
        return orjson.dumps({"t": TERMINATE, "a": self.app_id, "u": self.user_id})


@dataclass(frozen=True, slots=True)
class AppsChanged:
    app_id: str

    def encode(self) -> bytes:
        return orjson.dumps({"t": APPS, "a": self.app_id})


@dataclass(frozen=True, slots=True)
class UserPresence:
    """A signed-in user came online (``online``) or went offline, cluster-wide."""

    app_id: str
    user_id: str
    online: bool

    def encode(self) -> bytes:
        return orjson.dumps({"t": WATCH, "a": self.app_id, "u": self.user_id, "on": self.online})


BusMessage = BusEvent | EventBatch | Terminate | AppsChanged | UserPresence


def decode(raw: bytes | str) -> BusMessage | None:
    """Parse a bus message; None for anything unknown (a newer node's message kind)."""
    msg = orjson.loads(raw)
    kind = msg.get("t")
    if kind == EVENT:
        return BusEvent(
            msg["a"], msg["c"], msg["e"], msg.get("d"), msg.get("s"), msg.get("x"), msg.get("u")
        )
    if kind == BATCH:
        return _batch(msg["a"], msg["ev"])
    if kind == TERMINATE:
        return Terminate(msg["a"], msg["u"])
    if kind == APPS:
        return AppsChanged(msg["a"])
    if kind == WATCH:
        return UserPresence(msg["a"], msg["u"], bool(msg["on"]))
    return None
