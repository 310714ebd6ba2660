"""FCM HTTP v1: pyfcm builds the messages and owns the credentials; a keep-alive pool sends.

FCM v1 has no batch endpoint: throughput comes from many requests in flight. pyfcm's own
async helper opens one aiohttp session (one TCP connection) per message; its sync path is one
blocking request per thread. So the sends run on the worker process's provider loop
(workers/providers/loop.py) through ONE pool per sender of ``push.fcm_connections``
keep-alive HTTP/1.1 connections (workers/providers/http1.py; aiohttp when an HTTP(S) proxy is
configured), with up to ``push.fcm_concurrency`` sends in flight. pyfcm's ``parse_payload``
still makes the request body, once per publish (:meth:`FcmSender.prepare`): the body is the
same for every device but for the token, which is put in its slot per send (``parse_payload``
and its JSON encoding were a tenth of the CPU).

pyfcm's traps (reference: push-beams-fcm-apns.md, sections 0.2, 2.4 and the addendum) and what
is done about each here:

- its adapter retries 502/503 and repeats a POST after a read timeout, and a numeric
  ``Retry-After`` makes ``send_request`` sleep and recurse forever: its transport is not used
  for sends at all; the worker owns the retry policy and reads ``Retry-After`` itself;
- google-auth's token request has a 120 s default timeout and every pyfcm thread refreshes the
  token on first use: one refresh at a time per sender, in a thread (google-auth blocks),
  under a total deadline of ``send_timeout`` (workers/providers/deadline.py), shared by every
  send waiting for it; a 401 ``ACCESS_TOKEN_EXPIRED`` refreshes and repeats the POST once;
- a socket timeout bounds each read, not the exchange (an answer trickled a byte at a time):
  each send, token wait included, is bounded as a whole by a ``send_timeout`` deadline,
  and a cancelled request closes its connection;
- its exceptions drop the response body: responses are classified from status, body and
  headers (``error.details[].errorCode``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp
import google.auth.exceptions
import google.auth.transport.requests
import orjson
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from pyfcm.errors import FCMError

from config.settings import PushSettings
from workers.providers import deadline
from workers.providers.base import (
    AUTH,
    DEAD,
    DELIVERED,
    FAILED,
    RETRY,
    CredentialsError,
    SendResult,
    parse_retry_after,
    read_secret,
)
from workers.providers.deadline_adapter import DeadlineAdapter
from workers.providers.http1 import Http1Pool
from workers.providers.loop import event_loop, send_blocking

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
RETRY_STATUSES = {429, 500, 502, 503, 504}

# Legacy (Beams-documented) notification keys that FCM v1 puts under android.notification.
_ANDROID_NOTIFICATION_KEYS = {
    "icon": "icon",
    "color": "color",
    "sound": "sound",
    "tag": "tag",
    "click_action": "click_action",
    "body_loc_key": "body_loc_key",
    "body_loc_args": "body_loc_args",
    "title_loc_key": "title_loc_key",
    "title_loc_args": "title_loc_args",
    "android_channel_id": "channel_id",
    "channel_id": "channel_id",
}


def load_service_account(value: str) -> dict[str, Any]:
    text = read_secret(value, "{")
    try:
        info = json.loads(text)
    except ValueError:
        raise CredentialsError("the FCM service account is not valid JSON") from None
    missing = [
        k for k in ("project_id", "private_key", "client_email", "token_uri") if k not in info
    ]
    if not isinstance(info, dict) or missing:
        raise CredentialsError(f"the FCM service account lacks {', '.join(missing)}")
    return info


def build_message(fcm: dict[str, Any], instance_id: str, publish_id: str) -> dict[str, Any]:
    """pyfcm ``parse_payload`` keyword arguments (minus the token) for a Beams ``fcm`` section.

    Beams documents the legacy FCM downstream format; FCM v1 wants ``notification.{title,
    body, image}``, the rest under ``android``, string-only ``data``. Beams' metadata goes in
    ``data["pusher"]`` as a JSON string, which the Android SDK reads.
    """
    notification = dict(fcm.get("notification") or {})
    data = {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in (fcm.get("data") or {}).items()
        if k != "pusher"
    }
    android = dict(fcm.get("android") or {})
    android_notification = dict(android.get("notification") or {})
    for legacy, v1 in _ANDROID_NOTIFICATION_KEYS.items():
        if legacy in notification:
            android_notification[v1] = notification[legacy]
    if android_notification:
        android["notification"] = android_notification
    priority = fcm.get("priority")
    if isinstance(priority, str) and priority.lower() in ("high", "normal"):
        android["priority"] = priority.upper()
    if isinstance(fcm.get("time_to_live"), int | float):
        android["ttl"] = f"{int(fcm['time_to_live'])}s"
    if fcm.get("collapse_key"):
        android["collapse_key"] = str(fcm["collapse_key"])
    if fcm.get("restricted_package_name"):
        android["restricted_package_name"] = str(fcm["restricted_package_name"])

    title, body, image = (
        notification.get("title"),
        notification.get("body"),
        notification.get("image"),
    )
    pusher: dict[str, Any] = {
        "instanceId": instance_id,
        "publishId": publish_id,
        "hasDisplayableContent": bool(title or body),
        "hasData": bool(data),
    }
    if notification.get("click_action"):
        pusher["clickAction"] = notification["click_action"]
    data["pusher"] = json.dumps(pusher, separators=(",", ":"))
    return {
        "notification_title": title,
        "notification_body": body,
        "notification_image": image,
        "data_payload": data,
        "android_config": android or None,
        "apns_config": fcm.get("apns") or None,
        "webpush_config": fcm.get("webpush") or None,
        "fcm_options": fcm.get("fcm_options") or None,
    }


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's transport with our timeout, a total deadline, instead of its 120 s
    default per read."""

    def __init__(self, timeout: float) -> None:
        session = requests.Session()
        session.mount("https://", DeadlineAdapter(max_retries=0))
        session.mount("http://", DeadlineAdapter(max_retries=0))
        super().__init__(session)
        self._timeout = timeout

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):  # type: ignore[no-untyped-def,override]
        timeout = timeout or self._timeout
        with deadline.within(timeout):
            return super().__call__(url, method, body, headers, timeout=timeout, **kwargs)


class ClarionFCM(FCMNotification):
    """pyfcm with a shared, lock-guarded OAuth token and a configurable endpoint."""

    def __init__(self, base_url: str, token_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.FCM_END_POINT_BASE = base_url.rstrip("/")
        self._token_lock = threading.Lock()
        self._token_timeout = token_timeout

    def access_token(self) -> str:
        """A valid token, refreshed if needed (blocking: call it from a thread)."""
        creds = self.credentials
        if not self._token_lock.acquire(timeout=self._token_timeout):
            raise google.auth.exceptions.TransportError("timed out waiting for the OAuth token")
        try:
            if not creds.valid:
                # RefreshError (refused) and TransportError (unreachable) propagate unwrapped.
                creds.refresh(_TimedRequest(self._token_timeout))
            return creds.token  # type: ignore[no-any-return]
        finally:
            self._token_lock.release()

    def invalidate_token(self, token: str) -> None:
        with self._token_lock:
            if self.credentials.token == token:
                self.credentials.token = None


# The message of the cancellation that ends a send at send_timeout.
_EXPIRED = "clarion: FCM send_timeout passed"
# Stands for the token while pyfcm builds a publish's body; never a real FCM token.
_SLOT = "clarion-token-slot-5b0f3e1c9a7d4e2f"


class PreparedMessage:
    """A publish's request body as pyfcm builds it, cut where the token goes (or the reason
    pyfcm refused to build it)."""

    __slots__ = ("head", "tail", "error")

    def __init__(self, head: bytes = b"", tail: bytes = b"", error: str = "") -> None:
        self.head, self.tail, self.error = head, tail, error

    def body(self, token: str) -> bytes:
        return self.head + orjson.dumps(token) + self.tail


def prepare(client: FCMNotification, message: dict[str, Any]) -> PreparedMessage:
    """pyfcm's body for ``message`` (:func:`build_message` arguments), with a slot for the
    token: built once, it serves every device of the publish."""
    try:
        payload = client.parse_payload(fcm_token=_SLOT, **message)
    except FCMError as exc:  # pyfcm refused to build the message
        return PreparedMessage(error=f"invalid FCM message: {exc}")
    head, slot, tail = payload.partition(json.dumps(_SLOT).encode())
    if not slot or _SLOT.encode() in tail:
        raise AssertionError("pyfcm's body has no single token slot")
    return PreparedMessage(head, tail)


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def token_expired(status: int, body: bytes) -> bool:
    """A 401 that says our OAuth token expired (refresh it and send again)."""
    if status != 401:
        return False
    details = _error_of(body).get("details") or []
    return any(isinstance(d, dict) and d.get("reason") == "ACCESS_TOKEN_EXPIRED" for d in details)


def classify(status: int, body: bytes, reason: str, headers: Mapping[str, str]) -> SendResult:
    """What an FCM answer means for the token (``headers``: for ``Retry-After``)."""
    if status == 200:
        return SendResult(DELIVERED)
    error = _error_of(body)
    message = str(error.get("message") or reason or "")
    details = error.get("details") or []
    code = next(
        (
            d.get("errorCode")
            for d in details
            if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE
        ),
        None,
    )
    violations = [
        v
        for d in details
        if isinstance(d, dict) and d.get("@type", "").endswith("google.rpc.BadRequest")
        for v in d.get("fieldViolations") or []
    ]
    detail = f"{status} {code or error.get('status') or ''}: {message}".strip()
    if code == "UNREGISTERED":
        return SendResult(DEAD, detail)
    if code == "SENDER_ID_MISMATCH":
        return SendResult(DEAD, detail)
    if status == 400:
        token_problem = "registration token" in message.lower() and all(
            "token" in str(v.get("field", "")) for v in violations if isinstance(v, dict)
        )
        return SendResult(DEAD if token_problem else FAILED, detail)
    if status in RETRY_STATUSES:
        return SendResult(RETRY, detail, parse_retry_after(headers.get("Retry-After")))
    if status in (401, 403, 404):
        # Our OAuth token or project refused, or THIRD_PARTY_AUTH_ERROR (APNs/web credentials
        # configured in Firebase): a configuration problem, never the token's fault.
        return SendResult(AUTH, detail)
    return SendResult(FAILED, detail)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (None: direct)."""
    if urllib.request.proxy_bypass(urllib.parse.urlsplit(url).hostname or ""):
        return None
    return urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)


class FcmSender:
    """Sends to FCM tokens on the provider loop; one per (worker process, app credentials)."""

    platform = "fcm"

    def __init__(self, service_account_value: str, settings: PushSettings) -> None:
        info = load_service_account(service_account_value)
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[SCOPE]
            )
        except (ValueError, KeyError) as exc:
            raise CredentialsError(f"the FCM service account is unusable: {exc}") from None
        self.timeout = settings.send_timeout
        self.concurrency = settings.fcm_concurrency
        self.client = ClarionFCM(settings.fcm_base_url, settings.send_timeout,
                                 credentials=credentials)
        self.url = self.client.fcm_end_point
        self._heads: dict[str, tuple[dict[str, str], bytes]] = {}
        self.loop = event_loop()
        self._refresh: asyncio.Future[str] | None = None  # the refresh in progress, if any

        # HTTP(S)_PROXY/NO_PROXY as requests honours them, read once: aiohttp's trust_env
        # reads them, and ~/.netrc, on a thread for every request (a third of the CPU).
        self.proxy = _env_proxy(self.url)

        async def make() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=settings.fcm_connections)
            return aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=None))

        # Direct: the small keep-alive client (http1.py); through a proxy: aiohttp.
        self.pool: Http1Pool | None = None
        self.session: aiohttp.ClientSession | None = None
        if self.proxy is None:
            self.pool = Http1Pool(self.url, settings.fcm_connections, self.loop)
        else:
            self.session = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)

    def send(
        self, items: Sequence[tuple[Any, str, dict[str, Any]]]
    ) -> Iterator[tuple[Any, SendResult] | None]:
        """Send ``(key, token, message)`` items; yield ``(key, result)`` as each completes, and
        ``None`` whenever nothing completed for a moment."""
        return send_blocking(self, items, self.concurrency)

    def prepare(self, message: dict[str, Any]) -> PreparedMessage:
        """The request body of a publish, built once (see :func:`prepare`)."""
        return prepare(self.client, message)

    async def send_one(self, token: str, message: PreparedMessage | dict[str, Any]) -> SendResult:
        """One message (a :class:`PreparedMessage`, or pyfcm ``parse_payload`` arguments), on
        the provider loop; never raises, never outlasts ``send_timeout``."""
        started = time.monotonic()
        if isinstance(message, dict):
            message = self.prepare(message)
        if message.error:
            return SendResult(FAILED, message.error)
        # The deadline as asyncio.timeout sets it (the task cancelled when it passes), minus
        # that class's Python machinery: one timer, a tenth of the CPU per send less.
        task = asyncio.current_task()
        assert task is not None
        expiry = self.loop.call_later(self.timeout, task.cancel, _EXPIRED)
        try:
            return await self._post(message.body(token))
        except asyncio.CancelledError as exc:
            if exc.args[:1] != (_EXPIRED,):
                raise
            task.uncancel()
            return SendResult(RETRY, self._transport_detail(TimeoutError(), started))
        except google.auth.exceptions.RefreshError as exc:
            return SendResult(AUTH, f"FCM OAuth token refused: {exc}")
        except google.auth.exceptions.TransportError as exc:
            return SendResult(RETRY, f"FCM OAuth endpoint unreachable: {exc}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return SendResult(RETRY, self._transport_detail(exc, started))
        finally:
            expiry.cancel()

    async def _post(self, payload: bytes) -> SendResult:
        for first in (True, False):
            access = await self._access_token()
            head = self._heads.get(access)
            if head is None:  # built once per access token, not per send
                headers = {"Authorization": f"Bearer {access}",
                           "Content-Type": "application/json"}
                head = (headers, self.pool.head(headers) if self.pool else b"")
                self._heads = {access: head}
            if self.pool is not None:
                response = await self.pool.post(head[1], payload)
                status, body, reason, answer_headers = (
                    response.status, response.body, response.reason, response.headers
                )
            else:
                assert self.session is not None
                async with self.session.post(
                    self.url, data=payload, headers=head[0], proxy=self.proxy
                ) as answer:
                    body = await answer.read()
                status, reason, answer_headers = answer.status, answer.reason, answer.headers
            if first and token_expired(status, body):
                self.client.invalidate_token(access)
                continue
            return classify(status, body, reason or "", answer_headers)
        raise AssertionError("unreachable")

    async def _access_token(self) -> str:
        creds = self.client.credentials
        if creds.valid:
            return creds.token  # type: ignore[no-any-return]
        # One refresh at a time, shared by every send that needs it; a send that gives up
        # (its deadline) does not cancel it for the others.
        if self._refresh is None or self._refresh.done():
            self._refresh = self.loop.run_in_executor(None, self.client.access_token)
        return await asyncio.shield(self._refresh)

    def _transport_detail(self, exc: Exception, started: float) -> str:
        took = time.monotonic() - started
        if took >= self.timeout:
            return f"no complete answer from FCM within {self.timeout:g} s ({type(exc).__name__})"
        return f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self.pool is not None:
            self.loop.call_soon_threadsafe(self.pool.close)
        if self.session is not None:
            asyncio.run_coroutine_threadsafe(self.session.close(), self.loop)
