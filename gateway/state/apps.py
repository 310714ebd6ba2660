"""Apps without a restart: the config file's apps, overlaid by the Redis app store.

``P apps`` is a hash, app id -> the app's settings as JSON (the fields of
``config.settings.AppSettings``), written by ``clarion apps`` (gateway/cli/apps.py). An app
there replaces the config file's app with the same id (so ``rotate-secret`` and ``disable``
work on config apps too: they write an overriding copy); every other config app stays.

Everything that looks apps up goes through one resolver:

- the API and the workers (sync): :class:`AppResolver`, which re-reads ``P apps`` at most
  every ``ttl`` seconds (one HGETALL): the Channels REST API, the Beams APIs, the push and
  webhooks workers, the push metrics;
- the WebSocket node (asyncio): :class:`AppDirectory`, a snapshot the node refreshes every
  second and at once on an ``apps`` bus message, which :meth:`AppStore.put` publishes. The
  node then closes the connections of an app that became disabled (4003).

An entry that does not validate is skipped (and logged), never fatal: one bad row must not
take every app down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from config.settings import AppSettings, Settings
from gateway.state.bus import AppsChanged
from gateway.state.keys import Keys

log = structlog.get_logger("clarion.state.apps")

DEFAULT_TTL = 1.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_apps(raw: dict[Any, Any]) -> dict[str, AppSettings]:
    """``HGETALL P apps`` -> id -> AppSettings (invalid entries skipped)."""
    out: dict[str, AppSettings] = {}
    for app_id, blob in raw.items():
        try:
            app = AppSettings.model_validate(orjson.loads(blob))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.warning("app_store_entry_invalid", app=_text(app_id), error=str(exc)[:200])
            continue
        out[app.id] = app
    return out


class Apps:
    """An immutable view: config apps overlaid by stored ones, indexed by id and key."""

    __slots__ = ("by_id_map", "by_key_map", "stored")

    def __init__(self, config_apps: Iterable[AppSettings], stored: dict[str, AppSettings]) -> None:
        merged = {a.id: a for a in config_apps}
        merged.update(stored)
        self.stored = frozenset(stored)
        self.by_id_map = merged
        self.by_key_map: dict[str, AppSettings] = {}
        for app in merged.values():
            # Two apps with one key: the first by id wins (the CLI refuses to make this).
            self.by_key_map.setdefault(app.key, app)

    def by_id(self, app_id: str) -> AppSettings | None:
        return self.by_id_map.get(app_id)

    def by_key(self, key: str) -> AppSettings | None:
        return self.by_key_map.get(key)

    def all(self) -> list[AppSettings]:
        return sorted(self.by_id_map.values(), key=lambda a: (len(a.id), a.id))


class AppStore:
    """The Redis app store (sync client): for the CLI and the API."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def stored(self) -> dict[str, AppSettings]:
        return parse_apps(self.redis.hgetall(self.keys.apps))

    def view(self, settings: Settings) -> Apps:
        return Apps(settings.apps, self.stored())

    def put(self, app: AppSettings) -> None:
        """Store ``app`` (replacing any with its id) and tell every node at once."""
        if self.keys.cluster and ("{" in app.id or "}" in app.id):
            raise ValueError(f"the app id {app.id!r} has a brace: on Redis Cluster the app id "
                             "is the keys' hash tag")
        view_key_owner = None
        for other in self.stored().values():
            if other.key == app.key and other.id != app.id:
                view_key_owner = other.id
        if view_key_owner is not None:
            raise ValueError(f"the key {app.key!r} is already used by app {view_key_owner}")
        self.redis.hset(self.keys.apps, app.id, app.model_dump_json())
        self.redis.publish(self.keys.bus, AppsChanged(app.id).encode())

    def remove(self, app_id: str) -> None:
        """Delete a stored app and tell every node, which closes its connections."""
        self.redis.hdel(self.keys.apps, app_id)
        self.redis.publish(self.keys.bus, AppsChanged(app_id).encode())


class AppResolver:
    """API side: the current apps, re-read from Redis at most every ``ttl`` seconds.

    If Redis cannot be read, the last view is kept (or the config apps alone before the
    first successful read), so a Redis blip does not turn every request into a 404.
    """

    def __init__(self, settings: Settings, redis: Any, keys: Keys, ttl: float = DEFAULT_TTL
                 ) -> None:
        self.settings = settings
        self.store = AppStore(redis, keys)
        self.ttl = ttl
        self._view = Apps(settings.apps, {})
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    def view(self) -> Apps:
        now = time.monotonic()
        if now - self._loaded < self.ttl:
            return self._view
        with self._lock:
            if now - self._loaded >= self.ttl:
                self._reload(now)
        return self._view

    def _reload(self, now: float) -> None:
        try:
            self._view = Apps(self.settings.apps, self.store.stored())
        except Exception as exc:  # Redis down: keep what we know
            log.warning("app_store_unreadable", error=str(exc))
        self._loaded = now

    def by_id(self, app_id: str) -> AppSettings | None:
        return self.view().by_id(app_id)

    def find(self, app_id: str) -> AppSettings | None:
        """``by_id``, but a miss re-reads the store at once: for callers that only ask about
        apps known to exist (a worker handling what the API accepted a moment ago, whose view
        may predate the app). Never for ids a client picks: each miss costs a read."""
        app = self.by_id(app_id)
        if app is None:
            with self._lock:
                self._reload(time.monotonic())
            app = self._view.by_id(app_id)
        return app

    def by_key(self, key: str) -> AppSettings | None:
        return self.view().by_key(key)


class AppDirectory:
    """Node side: a snapshot refreshed by the node (``await refresh()``), read synchronously
    on every upgrade request and by every connection."""

    def __init__(self, settings: Settings, redis: Any, keys: Keys) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.view = Apps(settings.apps, {})

    def by_id(self, app_id: str) -> AppSettings | None:
        return self.view.by_id(app_id)

    def by_key(self, key: str) -> AppSettings | None:
        return self.view.by_key(key)

    async def refresh(self) -> list[AppSettings]:
        """Re-read the store; the apps whose settings changed (new ones included, removed
        ones as disabled copies, so the node closes their connections as for a disable)."""
        stored = parse_apps(await self.redis.hgetall(self.keys.apps))
        old, new = self.view, Apps(self.settings.apps, stored)
        self.view = new
        gone = [app.model_copy(update={"enabled": False})
                for app_id, app in old.by_id_map.items() if new.by_id(app_id) is None]
        return [app for app_id, app in new.by_id_map.items() if old.by_id(app_id) != app] + gone
