"""The bus between workers, API and WebSocket nodes: Redis pub/sub, one topic per channel.

A channel's events (``e`` and ``b`` below) go on its topic ``P bus:{app}:{channel}``, which a
node subscribes only while it has local subscribers on the channel (gateway/ws/topics.py);
everything else goes on ``P bus``, which every node listens to (events arriving there, from
workers of a version before per-channel topics, are handled like the others). Messages are
orjson objects; ``t`` says which kind:

- ``{"t": "e", "a": app, "c": channel, "e": event, "d": data, "s": serial|null,
  "p": prev|null, "x": socket_id|null, "u": user_id|null}``: an event for a channel's
  subscribers. ``s`` is the channel serial of events from the API and ``p`` the serial of the
  event before it on the channel (gateway/state/history.py); server-made events
  (member_added/removed, client events) carry neither and are not ordered against them. ``x``
  is the socket to leave out. ``u`` is the sending user's id, added on presence client events.
- ``{"t": "b", "a": app, "ev": [[channel, event, data, exclude|null, serial, prev], ...]}``:
  the events of one channel that one API request accepted, in one message: one PUBLISH and
  one decode per channel of a request instead of per event. Each is handled as an ``e``.
  (An event without ``prev``, from a version before chained serials, has ``serial - 1``.)
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
    prev: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "t": EVENT,
                "a": self.app_id,
                "c": self.channel,
                "e": self.event,
                "d": self.data,
                "s": self.serial,
                "p": self.prev,
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
    """The ``b`` message for ``events`` given as
    ``[channel, event, data, exclude, serial, prev]``."""
    return orjson.dumps({"t": BATCH, "a": app_id, "ev": events})


def _batched(app_id: str, item: Sequence[Any]) -> BusEvent:
    channel, event, data, exclude, serial = item[:5]
    serial = int(serial)
    prev = int(item[5]) if len(item) > 5 else serial - 1
    return BusEvent(app_id, channel, event, data, serial, exclude or None, prev=prev)


def _batch(app_id: str, events: list[list[Any]]) -> EventBatch:
    return EventBatch(app_id, [_batched(app_id, item) for item in events])


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
        serial, prev = msg.get("s"), msg.get("p")
        if serial is not None and prev is None:
            prev = serial - 1
        return BusEvent(
            msg["a"], msg["c"], msg["e"], msg.get("d"), serial, msg.get("x"), msg.get("u"), prev
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
