"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm (RFC 8188), through pywebpush.

A Beams web device's token is what the web SDK registers: base64 of
``JSON.stringify(PushSubscription)``, that is ``{"endpoint", "keys": {"p256dh", "auth"}}``.
pywebpush encrypts each message for its subscription (``WebPusher.send_async``); the VAPID
header is signed by py_vapid once per push service origin and reused until it nears its
expiry (an ES256 signature per send would cost more than the send). Sends share one aiohttp
session per sender on the worker's provider loop, ``push.web_connections`` per origin.

Answers: 200/201/202 delivered; 404/410 the subscription is gone (the device is removed);
429 and 5xx retried (``Retry-After`` honoured); 401/403 the push service refused our VAPID
credentials (stop the platform for this publish); 400/413 this message can never go.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
from pywebpush import WebPusher

from config.settings import PushSettings
from gateway.state.devices import parse_web_subscription
from gateway.vapid import VapidKeyError, load_vapid
from workers.providers.base import (
    AUTH,
    DEAD,
    DELIVERED,
    FAILED,
    RETRY,
    CredentialsError,
    SendResult,
    parse_retry_after,
)
from workers.providers.loop import event_loop, send_blocking

VAPID_LIFETIME = 12 * 3600  # what pywebpush signs for; re-signed an hour before the end
DEFAULT_TTL = 2419200  # Beams: four weeks
RETRY_STATUSES = {429, 500, 502, 503, 504}


def build_message(web: dict[str, Any], instance_id: str, publish_id: str) -> tuple[bytes, int]:
    """``(body, ttl)`` for a Beams ``web`` section: what the web SDK's service worker reads
    (``notification``, ``data`` with Beams' metadata under ``data.pusher``)."""
    notification = web.get("notification") if isinstance(web.get("notification"), dict) else {}
    data = {k: v for k, v in (web.get("data") or {}).items() if k != "pusher"}
    body = {
        "notification": notification,
        "data": {
            **data,
            "pusher": {
                "instanceId": instance_id,
                "publishId": publish_id,
                "hasDisplayableContent": bool(
                    notification.get("title") or notification.get("body")
                ),
                "hasData": bool(data),
            },
        },
    }
    ttl = web.get("time_to_live")
    ttl = int(ttl) if isinstance(ttl, int | float) and ttl >= 0 else DEFAULT_TTL
    return json.dumps(body, separators=(",", ":")).encode(), ttl


def classify(status: int, text: str, retry_after: str | None) -> SendResult:
    detail = f"{status} {text[:200]}".strip()
    if status in (200, 201, 202):
        return SendResult(DELIVERED)
    if status in (404, 410):
        return SendResult(DEAD, detail)
    if status in RETRY_STATUSES:
        return SendResult(RETRY, detail, parse_retry_after(retry_after))
    if status in (401, 403):
        return SendResult(AUTH, detail)
    return SendResult(FAILED, detail)


class WebPushSender:
    """Sends to web push subscriptions; one per (worker process, app credentials)."""

    platform = "web"

    def __init__(self, private_key: str, subject: str, settings: PushSettings) -> None:
        try:
            self.vapid = load_vapid(private_key)
        except VapidKeyError as exc:
            raise CredentialsError(str(exc)) from None
        self.subject = subject
        self.timeout = settings.send_timeout
        self.concurrency = settings.web_concurrency
        self.loop = event_loop()
        self._headers: dict[str, tuple[float, dict[str, str]]] = {}  # origin -> (exp, headers)

        async def make() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit_per_host=settings.web_connections)
            return aiohttp.ClientSession(connector=connector)

        self.session = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)

    def send(
        self, items: Sequence[tuple[Any, str, tuple[bytes, int]]]
    ) -> Iterator[tuple[Any, SendResult] | None]:
        return send_blocking(self, items, self.concurrency)

    async def send_one(self, token: str, message: tuple[bytes, int]) -> SendResult:
        """One message to one subscription, on the provider loop; never raises, never
        outlasts ``send_timeout``."""
        try:
            subscription = parse_web_subscription(token)
        except ValueError as exc:
            return SendResult(DEAD, f"unusable subscription: {exc}")
        body, ttl = message
        try:
            return await asyncio.wait_for(self._post(subscription, body, ttl), self.timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return SendResult(RETRY, f"{type(exc).__name__}: {exc}")
        except ValueError as exc:  # keys that are not P-256 points / 16 bytes
            return SendResult(DEAD, f"unusable subscription keys: {exc}")

    async def _post(self, subscription: dict[str, Any], body: bytes, ttl: int) -> SendResult:
        pusher = WebPusher(subscription, aiohttp_session=self.session)
        headers = dict(self._vapid_headers(subscription["endpoint"]))
        response = await pusher.send_async(body, headers, ttl=ttl, timeout=self.timeout)
        text = await response.text()
        return classify(response.status, text, response.headers.get("Retry-After"))

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        parts = urllib.parse.urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        cached = self._headers.get(origin)
        if cached is None or cached[0] - time.time() < 3600:
            exp = int(time.time()) + VAPID_LIFETIME
            signed = self.vapid.sign({"aud": origin, "exp": exp, "sub": self.subject})
            cached = self._headers[origin] = (exp, signed)
        return cached[1]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.session.close(), self.loop)
