"""Delivery records in Redis: create, read, list by status, replay; endpoint health.

A delivery is one POST body for one endpoint, retried until it is taken: ``P whd:{id}``
(hash) with the exact ``events`` JSON array, the url and endpoint id, ``created`` (ms),
``status`` (pending, failed, delivered, dead), ``next`` (ms of the next attempt), ``manual``
(a replay: one attempt, then dead again on failure), ``reason`` and ``attempts`` (JSON list).
``P whi:{app}:{status}`` indexes ids by status (score = created), ``P wh:retry`` holds every
delivery still to be attempted (score = when), see gateway/state/keys.py.

On Redis Cluster a delivery id ends with ``_{app}``: its record, its app's indexes and retry
schedule (``P wh:retry:{app}``) then share the app's slot, so the scripts stay atomic, and
the worker given only the id finds the record.

Synchronous Redis client: used by the workers, the operator API and the CLI.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from config.settings import Settings
from gateway.state.keys import Keys
from gateway.state.redis_client import register_script
from gateway.webhooks import events as ev
from gateway.webhooks import scripts

PENDING, FAILED, DELIVERED, DEAD = "pending", "failed", "delivered", "dead"
STATUSES = (PENDING, FAILED, DEAD, DELIVERED)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_delivery_id(created_ms: int, app_id: str | None = None) -> str:
    """Time-ordered, unique, and free of '.' (Standard Webhooks signs "{id}.{ts}.{body}");
    with ``app_id`` (Redis Cluster) it ends with ``_{app}``."""
    base = f"wh_{created_ms:011x}{secrets.token_hex(8)}"
    return base if app_id is None else f"{base}_{app_id}"


def delivery_app(delivery_id: str) -> str | None:
    """The app of a delivery id made with ``app_id`` (None if it has none)."""
    parts = delivery_id.split("_", 2)  # "wh", hex digits, app id (which may hold "_")
    return parts[2] if len(parts) == 3 and parts[0] == "wh" and parts[2] else None


@dataclass
class Delivery:
    id: str
    app_id: str
    url: str
    endpoint_id: str
    events: bytes
    created_ms: int
    status: str
    next_ms: int | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    manual: bool = False
    reason: str = ""

    def fields(self) -> dict[str, Any]:
        return {
            "app": self.app_id, "url": self.url, "ep": self.endpoint_id, "events": self.events,
            "created": self.created_ms, "status": self.status,
            "next": self.next_ms if self.next_ms is not None else "",
            "attempts": orjson.dumps(self.attempts), "manual": "1" if self.manual else "0",
            "reason": self.reason,
        }

    @classmethod
    def from_hash(cls, delivery_id: str, raw: dict[bytes, bytes]) -> Delivery:
        h = {k.decode(): v for k, v in raw.items()}
        nxt = h.get("next", b"")
        return cls(
            id=delivery_id, app_id=h["app"].decode(), url=h["url"].decode(),
            endpoint_id=h["ep"].decode(), events=h["events"], created_ms=int(h["created"]),
            status=h["status"].decode(), next_ms=int(nxt) if nxt else None,
            attempts=orjson.loads(h.get("attempts", b"[]")),
            manual=h.get("manual", b"0") == b"1", reason=h.get("reason", b"").decode(),
        )

    def summary(self) -> dict[str, Any]:
        last = self.attempts[-1] if self.attempts else None
        return {
            "id": self.id, "app_id": self.app_id, "url": self.url,
            "endpoint_id": self.endpoint_id, "status": self.status,
            "created_ms": self.created_ms, "next_attempt_ms": self.next_ms,
            "attempt_count": len(self.attempts), "events": len(orjson.loads(self.events)),
            "last_status": last.get("status") if last else None,
            "last_error": last.get("error") if last else None,
            "reason": self.reason or None,
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "manual": self.manual,
                "body_events": orjson.loads(self.events), "attempts": self.attempts}


class Store:
    def __init__(self, redis: Any, keys: Keys, settings: Settings, apps: Any = None) -> None:
        self.redis = redis
        self.app_by_id = ev.app_lookup(settings, apps)
        self.keys = keys
        self.settings = settings
        self._transition = register_script(redis, scripts.TRANSITION)

    # ----------------------------------------------------------------- records

    def new_id(self, app_id: str, created_ms: int) -> str:
        return new_delivery_id(created_ms, app_id if self.keys.cluster else None)

    def record_key(self, delivery_id: str) -> str | None:
        """``P whd:{id}``; None for an id that cannot be one of ours (no app on Cluster)."""
        app_id = delivery_app(delivery_id) if self.keys.cluster else ""
        return None if app_id is None else self.keys.wh_delivery(delivery_id, app_id)

    def retry_key(self, delivery_id: str) -> str | None:
        """The retry schedule a delivery is in (its app's on Cluster)."""
        if not self.keys.cluster:
            return self.keys.wh_retry
        app_id = delivery_app(delivery_id)
        return None if app_id is None else self.keys.wh_retry_of(app_id)

    def load(self, delivery_id: str) -> Delivery | None:
        key = self.record_key(delivery_id)
        if key is None:
            return None
        raw = self.redis.hgetall(key)
        if not raw or b"status" not in raw:
            return None
        return Delivery.from_hash(delivery_id, raw)

    def ttl_for(self, status: str) -> int | None:
        wh = self.settings.webhooks
        if status == DELIVERED:
            return int(wh.delivered_retention_hours * 3600)
        if status == DEAD:
            return int(wh.dead_retention_hours * 3600)
        return None

    def transition(
        self, d: Delivery, expected: str, new: str, *, retry_at: int | None,
        fields: dict[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set the status (and index, retry schedule, TTL); False if it changed."""
        flat: list[Any] = []
        for k, v in (fields or {}).items():
            flat += [k, v]
        ttl = self.ttl_for(new)
        ok = self._transition(
            keys=[self.keys.wh_delivery(d.id, d.app_id), self.keys.wh_index(d.app_id, expected),
                  self.keys.wh_index(d.app_id, new), self.keys.wh_retry_of(d.app_id)],
            args=[expected, new, d.id, d.created_ms, "" if retry_at is None else retry_at,
                  "" if ttl is None else ttl, *flat],
        )
        if ok and retry_at is not None and self.keys.cluster:
            # After the schedule it points at (see reporter.wake).
            self.redis.zadd(self.keys.wh_wake, {d.app_id: retry_at}, lt=True)
        return bool(ok)

    def list(
        self, app_id: str, status: str, limit: int = 50, before_ms: int | None = None,
        since_ms: int | None = None,
    ) -> list[Delivery]:
        """Newest first."""
        hi = "+inf" if before_ms is None else f"({before_ms}"
        lo = "-inf" if since_ms is None else since_ms
        ids = self.redis.zrevrangebyscore(self.keys.wh_index(app_id, status), hi, lo,
                                          start=0, num=limit)
        out = []
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.keys.wh_delivery(i.decode(), app_id))
        for i, raw in zip(ids, pipe.execute(), strict=True):
            if raw and b"status" in raw:
                out.append(Delivery.from_hash(i.decode(), raw))
        return out

    def counts(self, app_id: str) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for s in STATUSES:
            pipe.zcard(self.keys.wh_index(app_id, s))
        return dict(zip(STATUSES, pipe.execute(), strict=True))

    # ----------------------------------------------------------------- replay

    def replay(self, app_id: str, delivery_id: str) -> str:
        """Make a delivery due now. Dead or delivered ones get one more (manual) attempt;
        failed ones have their next scheduled attempt brought forward. Returns the outcome:
        "replayed", "pending" (already on its way), or "missing"."""
        d = self.load(delivery_id)
        if d is None or d.app_id != app_id:
            return "missing"
        now = now_ms()
        if d.status in (DEAD, DELIVERED):
            ok = self.transition(d, d.status, PENDING, retry_at=now,
                                 fields={"manual": "1", "next": now, "reason": ""})
        elif d.status == FAILED:
            ok = self.transition(d, FAILED, FAILED, retry_at=now, fields={"next": now})
        else:
            return "pending"
        return "replayed" if ok else self.replay(app_id, delivery_id)

    def replay_many(
        self, app_id: str, status: str = DEAD, since_ms: int | None = None,
        until_ms: int | None = None, limit: int = 10_000,
    ) -> list[str]:
        """Replay every ``status`` delivery created in [since_ms, until_ms]; their ids."""
        lo = "-inf" if since_ms is None else since_ms
        hi = "+inf" if until_ms is None else until_ms
        ids = [i.decode() for i in self.redis.zrangebyscore(
            self.keys.wh_index(app_id, status), lo, hi, start=0, num=limit)]
        return [i for i in ids if self.replay(app_id, i) == "replayed"]

    # ----------------------------------------------------------------- endpoints

    def endpoint_state(self, app_id: str, endpoint_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.wh_endpoint(app_id, endpoint_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def endpoints(self, app_id: str) -> list[dict[str, Any]]:
        app = self.app_by_id(app_id)
        if app is None:
            return []
        out = []
        for e in app.webhooks:
            eid = ev.endpoint_id(app_id, e.url)
            state = self.endpoint_state(app_id, eid)
            out.append({
                "endpoint_id": eid, "url": e.url, "events": list(e.events),
                "channel_prefix": e.channel_prefix, "standard_webhooks": e.standard_webhooks,
                "disabled": state.get("disabled") == "1",
                "disabled_at_ms": int(state["disabled_at"]) if "disabled_at" in state else None,
                "disabled_reason": state.get("reason"),
                "failing_since_ms": int(state["first_failure"])
                if "first_failure" in state else None,
            })
        return out

    def enable_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        return bool(self.redis.delete(self.keys.wh_endpoint(app_id, endpoint_id)))

    def disable_endpoint(self, app_id: str, endpoint_id: str, url: str, reason: str) -> None:
        key = self.keys.wh_endpoint(app_id, endpoint_id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"disabled": "1", "disabled_at": now_ms(), "reason": reason,
                                "url": url})
        pipe.persist(key)
        pipe.execute()

    def is_disabled(self, app_id: str, endpoint_id: str) -> bool:
        return self.redis.hget(self.keys.wh_endpoint(app_id, endpoint_id), "disabled") == b"1"
