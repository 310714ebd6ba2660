"""What the dashboard shows, read from the state the rest of Clarion keeps in Redis (nothing
here writes). Each function takes the API's context (gateway/api/app.py) and returns JSON-able
data; the views only add sign-in and the HTTP shape."""

from __future__ import annotations

import time
from typing import Any

from config.settings import AppSettings
from gateway.dashboard import timeseries
from gateway.protocol.names import ChannelKind, channel_kind, is_cache_channel
from gateway.state import occupancy
from gateway.state.cache import ChannelCache
from gateway.state.connections import cluster_connections
from gateway.state.history import parse_member
from gateway.state.publishes import PublishStore
from gateway.webhooks.store import FAILED, PENDING, Store

HISTORY_SHOWN = 20
MEMBERS_SHOWN = 100


def mask(secret: str) -> str:
    """Enough to recognise a secret, not to use it."""
    return secret[:3] + "…" + "•" * 8 if len(secret) > 6 else "•" * 8


def webhook_store(c: Any) -> Store:
    return Store(c.redis, c.keys, c.settings, c.apps)


def _publishes(c: Any) -> PublishStore:
    return PublishStore(c.redis, c.settings.redis.key_prefix, c.settings.push.status_ttl)


def app_summary(c: Any, app: AppSettings) -> dict[str, Any]:
    """One app's live counts (the overview's row)."""
    timeout = c.settings.websocket.node_timeout
    channels = occupancy.subscription_counts(c.redis, c.keys, app.id, timeout)
    presence = [ch for ch in channels if channel_kind(ch) is ChannelKind.PRESENCE]
    pipe = c.redis.pipeline(transaction=False)
    for ch in presence:
        pipe.hlen(c.keys.presence_members(app.id, ch))
    members = sum(int(n) for n in pipe.execute()) if presence else 0
    now = time.time()
    minutes = timeseries.series(c.redis, c.settings.redis.key_prefix, app.id, 2, now)
    # The previous minute and what the current one holds so far, over the time they span.
    span = 60 + now % 60
    webhook_counts = webhook_store(c).counts(app.id)
    recent = _publishes(c).recent(app.id, 20)
    return {
        "id": app.id, "key": app.key, "enabled": app.enabled,
        "connections": cluster_connections(c.redis, c.keys, app.id, timeout),
        "channels": len(channels), "presence_members": members,
        "events_per_second": round(sum(m["events"] for m in minutes) / span, 2),
        "delivered_per_second": round(sum(m["delivered"] for m in minutes) / span, 2),
        "webhook_backlog": webhook_counts[PENDING] + webhook_counts[FAILED],
        "webhooks_dead": webhook_counts["dead"],
        "push_in_flight": sum(1 for p in recent if p["status"] != "done"),
    }


def app_detail(c: Any, app: AppSettings) -> dict[str, Any]:
    """An app's settings (secrets masked) and counts."""
    config = app.model_dump(mode="json", exclude={"secret", "push", "webhooks"})
    return {
        **app_summary(c, app), "config": config, "secret_masked": mask(app.secret),
        "webhooks": [{"url": w.url, "events": w.events} for w in app.webhooks],
        "push_configured": {"fcm": app.push.fcm_service_account is not None,
                            "apns": app.push.apns_key is not None},
    }


def channel_list(c: Any, app: AppSettings) -> list[dict[str, Any]]:
    counts = occupancy.subscription_counts(c.redis, c.keys, app.id,
                                           c.settings.websocket.node_timeout)
    return [{"name": name, "subscriptions": n} for name, n in sorted(counts.items())]


def channel_detail(c: Any, app: AppSettings, channel: str) -> dict[str, Any]:
    """Subscribers, presence members, cache payload and the latest logged events."""
    timeout = c.settings.websocket.node_timeout
    out: dict[str, Any] = {
        "name": channel, "kind": channel_kind(channel).name.lower(),
        "subscriptions": occupancy.subscription_count(c.redis, c.keys, app.id, channel,
                                                      timeout),
        "members": None, "cache": None,
    }
    if channel_kind(channel) is ChannelKind.PRESENCE:
        raw = c.redis.hgetall(c.keys.presence_members(app.id, channel))
        out["members"] = [{"id": k.decode(), "info": v.decode()}
                          for k, v in sorted(raw.items())[:MEMBERS_SHOWN]]
    if is_cache_channel(channel):
        out["cache"] = ChannelCache(c.redis, c.keys, c.settings.cache.ttl).info(app.id, channel)
    rows = c.redis.zrevrange(c.keys.history(app.id, channel), 0, HISTORY_SHOWN - 1)
    out["history"] = [
        {"serial": e.serial, "event": e.event, "data": e.data}
        for e in (parse_member(r) for r in rows)
    ]
    return out


def webhooks(c: Any, app: AppSettings, status: str, limit: int) -> dict[str, Any]:
    store = webhook_store(c)
    return {
        "status": status, "counts": store.counts(app.id),
        "deliveries": [d.summary() for d in store.list(app.id, status, limit=limit)],
        "endpoints": store.endpoints(app.id),
    }


def push(c: Any, app: AppSettings) -> dict[str, Any]:
    store = _publishes(c)
    return {"totals": store.totals([app.id]).get(app.id, {}), "publishes": store.recent(app.id)}
