"""One delivery attempt: lock, sign, POST, record, and decide what comes next.

Idempotent under redelivery: a task for a delivery that is delivered or dead does nothing; a
task that arrives before the delivery's next attempt is due does nothing (the retry schedule
in ``P wh:retry`` enqueues it again when due); two workers never attempt the same delivery at
once (``P whl:{id}``, SET NX with a TTL of timeout + lease). Before posting, the delivery is
leased in ``P wh:retry`` (due again after timeout + lease): if this worker dies mid-attempt,
the scheduler enqueues it again once the lock has expired.

Outcomes: 2xx -> delivered. 410 -> the endpoint is disabled and the delivery dead. Anything
else (network error, timeout, SSRF refusal, 3xx - redirects are not followed -, 4xx, 5xx) ->
failed, next attempt after ``retry_schedule[n-1]`` seconds with jitter (429/503 Retry-After
lengthens the delay, up to ``retry_after_max``); schedule exhausted -> dead. A replayed
(manual) delivery gets one attempt and goes back to dead if it fails.

``time_ms``: with ``webhooks.time_ms = "attempt"`` (default) each attempt carries its own
time_ms and is signed again; the delivery id (``X-Clarion-Webhook-Id``, ``webhook-id``) stays
the same. The Python SDK's validate_webhook refuses bodies whose time_ms is more than 300 s
off, so a body stamped at creation would make every retry after five minutes unusable for
those receivers; the trade-off is that time_ms no longer shows how late a retry is (the
attempt number does not travel either). ``time_ms = "created"`` keeps Pusher's meaning.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from typing import Any

import orjson

from config.settings import AppSettings, Settings, WebhookSettings
from gateway.dashboard.debuglog import DebugLog
from gateway.protocol.signatures import (
    standard_webhook_key,
    standard_webhook_signature,
    webhook_signature,
)
from gateway.state.keys import Keys
from gateway.state.redis_client import register_script
from gateway.webhooks import events as ev
from gateway.webhooks import scripts
from gateway.webhooks.ssrf import parse_networks
from gateway.webhooks.store import DEAD, DELIVERED, FAILED, PENDING, Delivery, Store, now_ms
from workers.providers import webhook_http

log = logging.getLogger("clarion.webhooks")

USER_AGENT = "Clarion-Webhooks/1.0"
Poster = Callable[..., webhook_http.Result]


def build_request(
    app: AppSettings, endpoint: WebhookSettings | None, d: Delivery, time_ms: int,
    now_s: int,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and the headers of one attempt."""
    body = b'{"time_ms":%d,"events":%s}' % (time_ms, d.events)
    headers: dict[str, str] = dict(endpoint.headers) if endpoint else {}
    headers.update({
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Pusher-Key": app.key,
        "X-Pusher-Signature": webhook_signature(app.secret, body),
        "X-Clarion-Webhook-Id": d.id,
    })
    if endpoint is not None and endpoint.standard_webhooks:
        key = standard_webhook_key(endpoint.signing_secret, app.secret)
        headers["webhook-id"] = d.id
        headers["webhook-timestamp"] = str(now_s)
        headers["webhook-signature"] = standard_webhook_signature(key, d.id, now_s, body)
    return body, headers


def retry_delay(
    settings: Settings, failed_attempts: int, retry_after: float | None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``failed_attempts`` scheduled failures, or None
    when the schedule is exhausted."""
    wh = settings.webhooks
    if failed_attempts > len(wh.retry_schedule):
        return None
    base = wh.retry_schedule[failed_attempts - 1]
    r = rng or random
    delay = base * r.uniform(1 - wh.jitter, 1 + wh.jitter) if wh.jitter else base
    if retry_after is not None:
        delay = max(delay, min(retry_after, wh.retry_after_max))
    return delay


class Deliverer:
    """Attempts deliveries for one worker process."""

    def __init__(self, settings: Settings, redis: Any, keys: Keys,
                 post: Poster = webhook_http.post, apps: Any = None,
                 debuglog: DebugLog | None = None) -> None:
        self.settings = settings
        self.debuglog = debuglog
        self.redis = redis
        self.keys = keys
        self.app_by_id = ev.app_lookup(settings, apps)
        self.store = Store(redis, keys, settings, apps)
        self.post = post
        self.allowed = parse_networks(settings.webhooks.allowed_networks)
        self._release = register_script(redis, scripts.RELEASE)

    @property
    def lock_ms(self) -> int:
        wh = self.settings.webhooks
        return int((wh.timeout + wh.lease) * 1000)

    def attempt(self, delivery_id: str) -> str:
        """Run one attempt if one is due; return what happened (for logs and tests)."""
        d = self.store.load(delivery_id)
        if d is None:
            retry = self.store.retry_key(delivery_id)
            if retry is not None:
                self.redis.zrem(retry, delivery_id)
            return "missing"
        if d.status not in (PENDING, FAILED):
            return d.status
        if d.next_ms is not None and d.next_ms > now_ms() + 50:
            return "not_due"
        token = secrets.token_hex(8)
        lock = self.keys.wh_lock(delivery_id)
        if not self.redis.set(lock, token, nx=True, px=self.lock_ms):
            return "locked"
        try:
            d = self.store.load(delivery_id)  # again, under the lock
            if d is None or d.status not in (PENDING, FAILED):
                return d.status if d else "missing"
            if d.next_ms is not None and d.next_ms > now_ms() + 50:
                return "not_due"
            return self._attempt_locked(d)
        finally:
            self._release(keys=[lock], args=[token])

    def _attempt_locked(self, d: Delivery) -> str:
        app = self.app_by_id(d.app_id)
        endpoint = ev.find_endpoint(app, d.url) if app else None
        if app is None or endpoint is None:
            return self._dead(d, "endpoint no longer configured")
        if self.store.is_disabled(d.app_id, d.endpoint_id):
            return self._dead(d, "endpoint disabled")
        started = now_ms()
        # Lease: if this process dies from here on, the delivery is due again after the lock.
        self.redis.zadd(self.keys.wh_retry_of(d.app_id), {d.id: started + self.lock_ms})
        wh = self.settings.webhooks
        time_ms = started if wh.time_ms == "attempt" else d.created_ms
        body, headers = build_request(app, endpoint, d, time_ms, started // 1000)
        result = self.post(
            d.url, body, headers, timeout=wh.timeout, allowed_networks=self.allowed,
            max_response_bytes=wh.max_response_bytes,
        )
        record: dict[str, Any] = {
            "n": len(d.attempts) + 1, "at_ms": started, "status": result.status,
            "latency_ms": result.latency_ms, "error": result.error,
            "detail": result.detail or None, "ip": result.ip,
            "body": result.body.decode("utf-8", "replace") if result.body else None,
            "manual": d.manual, "next_attempt_ms": None,
        }
        if result.location:
            record["location"] = result.location
        if result.ok:
            self._endpoint_succeeded(d)
            self._finish(d, DELIVERED, record, retry_at=None, reason="")
            return DELIVERED
        if result.status == 410:
            self.store.disable_endpoint(d.app_id, d.endpoint_id, d.url, "410 Gone")
            log.warning("webhook endpoint disabled: %s answered 410 Gone (app %s)",
                        d.url, d.app_id)
            self._finish(d, DEAD, record, retry_at=None, reason="endpoint answered 410 Gone")
            return DEAD
        self._endpoint_failed(d, app)
        if d.manual:
            self._finish(d, DEAD, record, retry_at=None, reason="replay failed")
            return DEAD
        failed = sum(1 for a in [*d.attempts, record] if not a.get("manual"))
        retry_after = result.retry_after if result.status in (429, 503) else None
        delay = retry_delay(self.settings, failed, retry_after)
        if delay is None:
            self._finish(d, DEAD, record, retry_at=None, reason="retry schedule exhausted")
            return DEAD
        next_ms = now_ms() + int(delay * 1000)
        record["next_attempt_ms"] = next_ms
        self._finish(d, FAILED, record, retry_at=next_ms, reason="")
        return FAILED

    def _finish(self, d: Delivery, status: str, record: dict[str, Any] | None, *,
                retry_at: int | None, reason: str) -> None:
        attempts = [*d.attempts, record] if record is not None else d.attempts
        if self.debuglog is not None:
            self.debuglog.note(
                d.app_id, "webhook", delivery_id=d.id, url=d.url, outcome=status,
                attempt=len(attempts), http_status=record.get("status") if record else None,
                error=(record or {}).get("error") or reason or None, next_attempt_ms=retry_at)
        fields = {"attempts": orjson.dumps(attempts), "reason": reason,
                  "next": retry_at if retry_at is not None else "", "manual": "0"}
        if not self.store.transition(d, d.status, status, retry_at=retry_at, fields=fields):
            # Changed under us (an operator replay): record the attempt, keep their status.
            self.redis.hset(self.keys.wh_delivery(d.id, d.app_id), "attempts",
                            orjson.dumps(attempts))

    def _dead(self, d: Delivery, reason: str) -> str:
        log.warning("webhook delivery %s dead: %s", d.id, reason)
        self._finish(d, DEAD, None, retry_at=None, reason=reason)
        return DEAD

    # ----------------------------------------------------------------- endpoint health

    def _endpoint_succeeded(self, d: Delivery) -> None:
        self.redis.hdel(self.keys.wh_endpoint(d.app_id, d.endpoint_id), "first_failure")

    def _endpoint_failed(self, d: Delivery, app: AppSettings) -> None:
        window_ms = int(self.settings.webhooks.disable_after_hours * 3600 * 1000)
        key = self.keys.wh_endpoint(d.app_id, d.endpoint_id)
        now = now_ms()
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "first_failure", now)
        pipe.hget(key, "first_failure")
        pipe.hget(key, "disabled")
        _, first, disabled = pipe.execute()
        if disabled == b"1":
            return
        # Failures are forgiven after twice the window without news (Svix).
        self.redis.pexpire(key, 2 * window_ms)
        if first is not None and now - int(first) >= window_ms:
            hours = self.settings.webhooks.disable_after_hours
            self.store.disable_endpoint(d.app_id, d.endpoint_id, d.url,
                                        f"failing without a success for {hours:g} h")
            log.warning("webhook endpoint disabled: %s has failed for %g h (app %s)",
                        d.url, hours, app.id)
