"""APNs over HTTP/2 through libcurl (workers/providers/curl_h2.py), aioapns kept for its model.

What aioapns still does here: the message model (``NotificationRequest``: token, body,
apns-id, expiration, priority, collapse id, push type, topic) and the provider token
(``JWTAuthorizationHeaderProvider``: an ES256 JWT, re-signed every 30 minutes). What is
replaced: its HTTP/2 connection (pure-Python ``h2``), whose header building, HPACK and response
parsing were about 70% of the worker's CPU per notification. The request headers are the
ones aioapns writes, in its order.

Per-device outcomes are classified as before (:func:`workers.providers.apns.classify`). Each
send is bounded by ``send_timeout``; a send that times out has its stream reset (the others on
the connection carry on), and once nothing is in flight the connections are closed and opened
afresh, as the aioapns sender does, so a connection whose answers were being held back (one
trickling its bytes) is not kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aioapns import NotificationRequest
from aioapns.connection import JWTAuthorizationHeaderProvider

from config.settings import PushSettings
from workers.providers.apns import PRODUCTION_HOST, SANDBOX_HOST, checked_key, classify
from workers.providers.base import RETRY, SendResult
from workers.providers.curl_h2 import CurlH2Client
from workers.providers.loop import event_loop, send_blocking


class CurlApnsSender:
    """Sends to many APNs tokens at once over libcurl's multiplexed HTTP/2 streams."""

    platform = "apns"

    def __init__(
        self,
        key: str,
        key_id: str,
        team_id: str,
        topic: str,
        sandbox: bool,
        settings: PushSettings,
    ) -> None:
        pem = checked_key(key, key_id, team_id)
        self.topic = topic
        self.timeout = settings.send_timeout
        self.concurrency = settings.apns_concurrency
        self.loop = event_loop()
        host = settings.apns_host or (SANDBOX_HOST if sandbox else PRODUCTION_HOST)
        self.auth = JWTAuthorizationHeaderProvider(pem, key_id, team_id)
        self.http = CurlH2Client(
            self.loop,
            f"https://{host}:{settings.apns_port}",
            ca_file=settings.apns_ca_file,
            max_connections=settings.apns_max_connections,
            connect_timeout=settings.send_timeout,
        )
        # Touched on the loop only.
        self._recycle_due = False
        self._body: tuple[Any, bytes] | None = None  # (message, its JSON): a publish shares one
        self._fixed: tuple[tuple[Any, ...], list[bytes]] | None = None

    def send(
        self, items: Sequence[tuple[Any, str, NotificationRequest]]
    ) -> Iterator[tuple[Any, SendResult] | None]:
        """Send ``(key, token, request)`` items; yield ``(key, result)`` as each completes, and
        ``None`` whenever nothing completed for a moment."""
        return send_blocking(self, items, self.concurrency)

    async def send_one(self, token: str, request: NotificationRequest) -> SendResult:
        """One notification, on the provider loop; never raises, never outlasts the timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                status, body = await self.http.post(
                    f"/3/device/{request.device_token}", self._headers(request), self._json(request)
                )
            result = classify(str(status), _reason(body))
        except TimeoutError:
            self._recycle_due = True
            result = SendResult(RETRY, f"no answer from APNs in {self.timeout} s")
        except Exception as exc:  # noqa: BLE001 - ConnectionError from libcurl…
            result = SendResult(RETRY, f"{type(exc).__name__}: {exc}")
        if self._recycle_due and not self.http.in_flight():
            self._recycle_due = False
            self.http.reset()
        return result

    def _json(self, request: NotificationRequest) -> bytes:
        cached = self._body
        if cached is None or cached[0] is not request.message:
            data = json.dumps(request.message, ensure_ascii=False).encode()
            cached = self._body = (request.message, data)
        return cached[1]

    def _headers(self, request: NotificationRequest) -> list[bytes]:
        """aioapns's request headers: per request apns-id and expiration, the rest shared."""
        authorization = self.auth.get_header()
        shape = (
            authorization,
            request.apns_topic,
            request.priority,
            request.collapse_key,
            request.push_type,
        )
        fixed = self._fixed
        if fixed is None or fixed[0] != shape:
            fixed = self._fixed = (shape, self._fixed_headers(request, authorization))
        headers = [f"apns-id: {request.notification_id}".encode()]
        if request.time_to_live is not None:
            expiration = int(time.time()) + request.time_to_live
            headers.append(f"apns-expiration: {expiration}".encode())
        headers.extend(fixed[1])
        return headers

    def _fixed_headers(self, request: NotificationRequest, authorization: str) -> list[bytes]:
        headers = [f"apns-topic: {request.apns_topic or self.topic}"]
        if request.priority is not None:
            headers.append(f"apns-priority: {request.priority}")
        if request.collapse_key is not None:
            headers.append(f"apns-collapse-id: {request.collapse_key}")
        if request.push_type is not None:
            headers.append(f"apns-push-type: {request.push_type.value}")
        headers.append(f"authorization: {authorization}")
        return [h.encode() for h in headers] + [b"Accept:", b"Content-Type:", b"Expect:"]

    def close(self) -> None:
        def close_when_idle() -> None:
            if not self.http.in_flight():
                self.http.close()

        self.loop.call_soon_threadsafe(close_when_idle)


def _reason(body: bytes) -> str | None:
    """APNs's error ``reason`` (an error answer's JSON body; a 200 has none)."""
    if not body:
        return None
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None
