"""Webhook event bodies and which endpoints of an app want which event."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from config.settings import AppSettings, Settings, WebhookSettings

CHANNEL_OCCUPIED = "channel_occupied"
CHANNEL_VACATED = "channel_vacated"
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"
CLIENT_EVENT = "client_event"
CACHE_MISS = "cache_miss"
SUBSCRIPTION_COUNT = "subscription_count"

OCCUPANCY = (CHANNEL_OCCUPIED, CHANNEL_VACATED)
MEMBERSHIP = (MEMBER_ADDED, MEMBER_REMOVED)

SEP = "\x1f"


AppLookup = Callable[[str], AppSettings | None]


def app_lookup(settings: Settings, apps: Any = None) -> AppLookup:
    """``apps.by_id`` when an app resolver is given (config apps overlaid by the Redis app
    store, gateway/state/apps.py: AppDirectory on a node, AppResolver elsewhere), else the
    settings' own apps. An AppResolver's view may be up to a second old: an app it does not
    know yet is looked up in the store itself before it is declared missing."""
    if apps is None:
        return settings.app_by_id
    store = getattr(apps, "store", None)
    if store is None:
        return apps.by_id  # type: ignore[no-any-return]

    def by_id(app_id: str) -> AppSettings | None:
        app = apps.by_id(app_id)
        if app is None:
            app = store.view(settings).by_id(app_id)
        return app  # type: ignore[no-any-return]

    return by_id


def endpoint_id(app_id: str, url: str) -> str:
    """A short stable id for an endpoint (the app and its URL)."""
    return hashlib.sha256(f"{app_id}{SEP}{url}".encode()).hexdigest()[:16]


def endpoint_matches(endpoint: WebhookSettings, event: str, channel: str) -> bool:
    if event not in endpoint.events:
        return False
    return endpoint.channel_prefix is None or channel.startswith(endpoint.channel_prefix)


def wants(app: AppSettings | None, event: str, channel: str) -> bool:
    """Whether any endpoint of the app takes ``event`` for ``channel``."""
    if app is None or not app.webhooks:
        return False
    return any(endpoint_matches(e, event, channel) for e in app.webhooks)


def wants_any(app: AppSettings | None, events: tuple[str, ...], channel: str) -> bool:
    return any(wants(app, e, channel) for e in events)


def find_endpoint(app: AppSettings, url: str) -> WebhookSettings | None:
    return next((e for e in app.webhooks if e.url == url), None)


def encode(name: str, channel: str, **fields: Any) -> bytes:
    """One event of the ``events`` array, in Pusher's field order."""
    return orjson.dumps({"name": name, "channel": channel, **fields})


def client_event(
    channel: str, event: str, data: Any, socket_id: str, user_id: str | None
) -> bytes:
    # Pusher's fixtures carry ``data`` as a JSON string; a client that sent an object gets it
    # JSON-encoded (protocol reference 6.1).
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    fields: dict[str, Any] = {"event": event, "data": text, "socket_id": socket_id}
    if user_id is not None:
        fields["user_id"] = user_id
    return encode(CLIENT_EVENT, channel, **fields)


def subscription_count_prefix(channel: str) -> bytes:
    """The event up to its count: the Lua script appends ``<count>}``."""
    full = encode(SUBSCRIPTION_COUNT, channel, subscription_count=0)
    assert full.endswith(b"0}")
    return full[:-2]
