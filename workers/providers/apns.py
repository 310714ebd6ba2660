"""APNs: the message model, outcome classification, and the aioapns client made safe for a
Celery worker.

:func:`ApnsSender` picks the client. The default, ``push.apns_client = "curl"``, is
workers/providers/apns_curl.py: aioapns's messages and provider token sent through libcurl's
HTTP/2 (nghttp2, in C), about a third of the worker CPU per notification of aioapns's own
pure-Python h2 connection. :class:`AioapnsSender` below is that connection, kept as the
fallback (``"aioapns"``, or a libcurl without HTTP/2).

aioapns's traps (reference: push-beams-fcm-apns.md, sections 0.3-0.5, 3.6 and the addendum)
and what is done about each here:

- it binds to the event loop current when ``APNs(...)`` is built and breaks on any other:
  every client is built and used on the worker process's provider loop
  (workers/providers/loop.py);
- it has no request timeout: every send is wrapped in ``asyncio.wait_for(send_timeout)``;
- a cancelled send strands the connection's other requests and raises ``InvalidStateError``
  when the connection closes: after a timeout, once no send is in flight (closing a connection
  would fail the other sends, which APNs may already have delivered), the finished futures are
  dropped from each connection and the connections are closed, so later sends start clean;
- it never returns HTTP/2 flow-control credit for error bodies (about 1,200 error answers
  exhaust a connection): connections are recycled after ``RECYCLE_AFTER_ERRORS`` error answers;
- it writes a request body whatever the connection's send window, and when the window is short
  it catches h2's ``FlowControlError`` and sleeps a whole second before trying again: a burst of
  a few hundred concurrent sends (a 64 KiB window is ~500 small payloads, or 16 of 4 KiB)
  stalled every connection for a second at a time (about 400 notifications/s in the
  benchmark). :class:`FlowControlledProtocol` waits until the window can take the body and
  only then hands the request to aioapns;
- per request it writes to the TLS socket (one ``send`` syscall each) and Huffman-codes the
  new header values in pure Python (about a third of its CPU per notification): the protocol
  coalesces writes to one per event-loop turn and sends header literals without Huffman
  coding (a few more bytes per request, valid HPACK); h2 also validates and normalises every
  outbound header, which the protocol turns off for the headers aioapns builds;
- it forgets a stream's ``request_streams`` entry only when an error body arrives, so a busy
  connection grows by one entry per successful notification for as long as it lives (about
  +25 MB of worker RSS over 100,000 sends in the benchmark): the protocol drops the entry when
  the stream ends;
- the host and port are class attributes of the protocol: a per-client subclass points them at
  ``push.apns_host``/``apns_port`` (the emulator in tests), with ``push.apns_ca_file`` trusted.

The key is checked (an ES256 token is signed) when the sender is built, so an unusable .p8 is a
credentials error at once rather than an exception per send.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jwt
from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsProductionClientProtocol
from aioapns.exceptions import ConnectionClosed

from config.settings import PushSettings
from workers.providers.base import (
    AUTH,
    DEAD,
    DELIVERED,
    FAILED,
    RETRY,
    CredentialsError,
    SendResult,
    read_secret,
)
from workers.providers.loop import event_loop, send_blocking

if TYPE_CHECKING:
    from workers.providers.apns_curl import CurlApnsSender

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
RECYCLE_AFTER_ERRORS = 500

_DEAD_REASONS = {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
_RETRY_REASONS = {
    "TooManyRequests",
    "TooManyProviderTokenUpdates",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
    "IdleTimeout",
    "ExpiredProviderToken",
}
_AUTH_REASONS = {
    "InvalidProviderToken",
    "MissingProviderToken",
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
    "UnrelatedKeyIdInToken",
    "BadEnvironmentKeyIdInToken",
    "TopicDisallowed",
    "BadTopic",
    "MissingTopic",
}


# --------------------------------------------------------------------------- the protocol


class FlowControlledProtocol(APNsProductionClientProtocol):  # type: ignore[misc]
    """aioapns's protocol, but a send waits for HTTP/2 send window instead of sleeping 1 s.

    The window is checked just before aioapns's own ``send_notification``, which acquires a
    stream and writes headers and body without yielding (its stream semaphore does not suspend
    while streams are free), so no other send can take the window in between. Only when the
    server's MAX_CONCURRENT_STREAMS is exhausted can that happen, and then aioapns's
    one-second fallback applies as before. Waiters wake whenever the server sends anything
    (WINDOW_UPDATE frames included) and when the connection is lost; the caller's
    ``wait_for`` bounds the wait.
    """

    _window_event: asyncio.Event | None = None
    _lost = False
    _flush_pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        encoder = self.conn.encoder
        encoder.encode = functools.partial(type(encoder).encode, encoder, huffman=False)
        # The request headers are aioapns's own, well-formed: h2's checks and normalisation
        # of every outbound header (a generator per rule and header) were a fifth of the CPU.
        self.conn.config.validate_outbound_headers = False
        self.conn.config.normalize_outbound_headers = False
        super().connection_made(transport)

    def flush(self) -> None:
        """One socket write per loop turn for everything queued meanwhile (aioapns calls
        this after every request and every read)."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        if self.transport is None or self.transport.is_closing():
            return
        super().flush()

    def _event(self) -> asyncio.Event:
        if self._window_event is None:
            self._window_event = asyncio.Event()
        return self._window_event

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._window_event is not None:
            self._window_event.set()

    def on_stream_ended(self, stream_id: int) -> None:
        super().on_stream_ended(stream_id)
        # An error body (which comes before the end of its stream) already took it out.
        self.request_streams.pop(stream_id, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._window_event is not None:
            self._window_event.set()
        super().connection_lost(exc)

    _sized: tuple[Any, int] | None = None  # (message, its JSON size): a publish shares one

    async def send_notification(self, request: NotificationRequest) -> Any:
        sized = self._sized
        if sized is None or sized[0] is not request.message:
            sized = self._sized = (
                request.message,
                len(json.dumps(request.message, ensure_ascii=False).encode()),
            )
        size = sized[1]
        while self.conn.outbound_flow_control_window < size:
            if self._lost or self.transport is None or self.transport.is_closing():
                raise ConnectionClosed("connection closed while waiting for send window")
            event = self._event()
            event.clear()
            await event.wait()
        return await super().send_notification(request)


# --------------------------------------------------------------------------- messages


def build_message(apns: dict[str, Any], publish_id: str) -> tuple[dict[str, Any], int, PushType]:
    """``(body, priority, push type)`` for a Beams ``apns`` section (the literal APNs JSON
    body), the same for every device of a publish.

    Beams' metadata goes in ``data.pusher.publishId`` (the iOS SDK reads it). The push type and
    priority follow the payload: an alert (or badge/sound) is ``alert`` at priority 10, a
    content-available-only payload is ``background`` at priority 5 as Apple requires.
    """
    message = dict(apns)
    data = dict(message.get("data") or {}) if isinstance(message.get("data"), dict) else {}
    data["pusher"] = {"publishId": publish_id}
    message["data"] = data
    aps = message.get("aps") if isinstance(message.get("aps"), dict) else {}
    visible = any(k in aps for k in ("alert", "badge", "sound"))
    background = not visible and aps.get("content-available") == 1
    if background:
        return message, 5, PushType.BACKGROUND
    return message, 10, PushType.ALERT


def request_for(built: tuple[dict[str, Any], int, PushType], token: str) -> NotificationRequest:
    message, priority, push_type = built
    return NotificationRequest(
        device_token=token, message=message, priority=priority, push_type=push_type
    )


def build_request(apns: dict[str, Any], publish_id: str, token: str) -> NotificationRequest:
    """The aioapns request for one device (:func:`build_message` and :func:`request_for`)."""
    return request_for(build_message(apns, publish_id), token)


def classify(status: str, reason: str | None) -> SendResult:
    reason = reason or ""
    detail = f"{status} {reason}".strip()
    if status == "200":
        return SendResult(DELIVERED)
    if status == "410" or reason in _DEAD_REASONS:
        return SendResult(DEAD, detail)
    if reason in _RETRY_REASONS or status in ("429", "500", "502", "503", "504"):
        return SendResult(RETRY, detail)
    if reason in _AUTH_REASONS or status == "403":
        return SendResult(AUTH, detail)
    return SendResult(FAILED, detail)


# --------------------------------------------------------------------------- the senders


def ApnsSender(  # noqa: N802 - the senders' common constructor
    key: str, key_id: str, team_id: str, topic: str, sandbox: bool, settings: PushSettings
) -> CurlApnsSender | AioapnsSender:
    """The APNs sender ``push.apns_client`` names: libcurl's HTTP/2 (nghttp2, in C) unless
    aioapns is asked for or this libcurl has no HTTP/2."""
    if settings.apns_client == "curl":
        from workers.providers import curl_h2

        if curl_h2.has_http2():
            from workers.providers.apns_curl import CurlApnsSender

            return CurlApnsSender(key, key_id, team_id, topic, sandbox, settings)
    return AioapnsSender(key, key_id, team_id, topic, sandbox, settings)


def checked_key(key: str, key_id: str, team_id: str) -> str:
    """The .p8 key's PEM text, once it has signed an ES256 token (an unusable key is a
    credentials error at once rather than an exception per send)."""
    pem = read_secret(key, "-----BEGIN")
    try:
        jwt.encode(
            {"iss": team_id, "iat": int(time.time())},
            pem,
            algorithm="ES256",
            headers={"kid": key_id},
        )
    except Exception as exc:  # noqa: BLE001 - any failure means the key is unusable
        raise CredentialsError(f"the APNs key cannot sign ES256 tokens: {exc}") from None
    return pem


class AioapnsSender:
    """Sends to many APNs tokens at once over multiplexed HTTP/2 streams (aioapns, pure-Python
    h2): the fallback where libcurl has no HTTP/2 (``push.apns_client = "aioapns"``)."""

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
        self.timeout = settings.send_timeout
        self.concurrency = settings.apns_concurrency
        self.loop = event_loop()
        host = settings.apns_host or (SANDBOX_HOST if sandbox else PRODUCTION_HOST)
        ssl_context = ssl.create_default_context(cafile=settings.apns_ca_file)
        protocol = type(
            "ClarionAPNsProtocol",
            (FlowControlledProtocol,),
            {"APNS_SERVER": host, "APNS_PORT": settings.apns_port},
        )

        async def make() -> APNs:
            client = APNs(
                key=pem,
                key_id=key_id,
                team_id=team_id,
                topic=topic,
                use_sandbox=sandbox,
                ssl_context=ssl_context,
                max_connections=settings.apns_max_connections,
                max_connection_attempts=2,
                err_func=_quiet,
            )
            client.pool.protocol_class = protocol
            return client

        self.client: APNs = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)
        # Touched on the loop only.
        self._errors_since_recycle = 0
        self._in_flight = 0
        self._recycle_due = False

    def send(
        self, items: Sequence[tuple[Any, str, NotificationRequest]]
    ) -> Iterator[tuple[Any, SendResult] | None]:
        """Send ``(key, token, request)`` items; yield ``(key, result)`` as each completes, and
        ``None`` whenever nothing completed for a moment."""
        return send_blocking(self, items, self.concurrency)

    async def send_one(self, token: str, request: NotificationRequest) -> SendResult:
        """One notification, on the provider loop; never raises, never outlasts the timeout."""
        self._in_flight += 1
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the send in a second task.
            async with asyncio.timeout(self.timeout):
                response = await self.client.send_notification(request)
            result = classify(response.status, response.description)
        except TimeoutError:
            self._recycle_due = True
            result = SendResult(RETRY, f"no answer from APNs in {self.timeout} s")
        except Exception as exc:  # noqa: BLE001 - MaxAttemptsExceeded, ConnectionClosed…
            result = SendResult(RETRY, f"{type(exc).__name__}: {exc}")
        finally:
            self._in_flight -= 1
        if result.outcome != DELIVERED:
            self._errors_since_recycle += 1
            if self._errors_since_recycle >= RECYCLE_AFTER_ERRORS:
                self._recycle_due = True
        if self._recycle_due and not self._in_flight:
            self._recycle()
        return result

    def _recycle(self) -> None:
        """Close every connection, forgetting finished (e.g. cancelled) requests first."""
        self._errors_since_recycle = 0
        self._recycle_due = False
        for connection in list(self.client.pool.connections):
            connection.requests = {k: f for k, f in connection.requests.items() if not f.done()}
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already closing
                pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._recycle)


async def _quiet(request: NotificationRequest, result: Any) -> None:
    """aioapns logs every non-200 at ERROR; outcomes are recorded by the worker instead."""
