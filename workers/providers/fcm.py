"""FCM HTTP v1 through pyfcm, made safe for a Celery worker.

pyfcm's traps (reference: push-beams-fcm-apns.md, sections 0.2, 2.4 and the addendum) and what
is done about each here:

- its default adapter retries 502/503 ten times (about 8 minutes) and repeats a POST after a read
  timeout: the client gets ``HTTPAdapter(max_retries=0)`` and the worker owns the retry policy;
- a numeric ``Retry-After`` makes ``send_request`` sleep and recurse forever, an HTTP-date one
  raises ``ValueError``: ``send_request`` is overridden to do one POST (plus one retry after an
  ``ACCESS_TOKEN_EXPIRED`` 401) and the caller reads ``Retry-After`` itself;
- every thread refreshes the OAuth token on first use and google-auth's token request has a
  120 s default timeout: the access token is shared behind a lock, refreshed only when expired
  (or refused), with ``send_timeout`` as the token request's timeout;
- requests' ``timeout`` bounds each socket read, so a server trickling its answer (or the
  token endpoint's) a byte at a time held a send for minutes: every send, token refresh
  included, runs under a total deadline of ``send_timeout`` (workers/providers/deadline.py,
  its adapter in deadline_adapter.py), and a send waits for another thread's token refresh
  only until then;
- the first concurrent use of a fresh client fails with ``TypeError``: ``fcm_end_point`` is
  computed once before any thread uses it;
- its exceptions drop the response body: responses are classified from the raw
  ``requests.Response`` (``error.details[].errorCode``).

Sends run on a thread pool (``push.fcm_concurrency`` threads, one keep-alive connection each).
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
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
    """pyfcm with one POST per send, a shared token, and a configurable endpoint."""

    def __init__(self, base_url: str, token_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.FCM_END_POINT_BASE = base_url.rstrip("/")
        self._token_lock = threading.Lock()
        self._token_timeout = token_timeout

    def _get_access_token(self) -> str:
        creds = self.credentials
        # Another thread may be refreshing (for as long as the token endpoint takes): wait no
        # longer than this send may take, rather than one refresh after another.
        if not self._token_lock.acquire(timeout=deadline.cap(self._token_timeout)):
            raise google.auth.exceptions.TransportError("timed out waiting for the OAuth token")
        try:
            if not creds.valid:
                # RefreshError (refused) and TransportError (unreachable) propagate unwrapped.
                creds.refresh(_TimedRequest(self._token_timeout))
            return creds.token  # type: ignore[no-any-return]
        finally:
            self._token_lock.release()

    def invalidate_token(self) -> None:
        with self._token_lock:
            self.credentials.token = None
        self.thread_local.token_expiry = 0

    def send_request(self, payload=None, timeout=None):  # type: ignore[no-untyped-def]
        # One deadline for the token (``requests_session`` refreshes it) and the POST(s).
        with deadline.within(timeout):
            session = self.requests_session
            response = session.post(self.fcm_end_point, data=payload, timeout=timeout)
            if self._is_access_token_expired(response):
                self.invalidate_token()
                response = self.requests_session.post(
                    self.fcm_end_point, data=payload, timeout=timeout
                )
            return response


def classify(response: requests.Response) -> SendResult:
    status = response.status_code
    if status == 200:
        return SendResult(DELIVERED)
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or response.reason or "")
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
        return SendResult(RETRY, detail, parse_retry_after(response.headers.get("Retry-After")))
    if status in (401, 403, 404):
        # Our OAuth token or project refused, or THIRD_PARTY_AUTH_ERROR (APNs/web credentials
        # configured in Firebase): a configuration problem, never the token's fault.
        return SendResult(AUTH, detail)
    return SendResult(FAILED, detail)


class FcmSender:
    """Sends to many FCM tokens at once; one per (worker process, app credentials)."""

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
        self.client = ClarionFCM(
            settings.fcm_base_url,
            settings.send_timeout,
            credentials=credentials,
            adapter=DeadlineAdapter(
                max_retries=0, pool_connections=1, pool_maxsize=settings.fcm_concurrency
            ),
        )
        _ = self.client.fcm_end_point  # computed once, before threads race on it
        self.pool = ThreadPoolExecutor(settings.fcm_concurrency, thread_name_prefix="fcm")

    def send_one(self, token: str, message: dict[str, Any]) -> SendResult:
        started = time.monotonic()
        try:
            payload = self.client.parse_payload(fcm_token=token, **message)
            response = self.client.send_request(payload, self.timeout)
        except google.auth.exceptions.RefreshError as exc:
            return SendResult(AUTH, f"FCM OAuth token refused: {exc}")
        except google.auth.exceptions.TransportError as exc:
            return SendResult(RETRY, f"FCM OAuth endpoint unreachable: {exc}")
        except (requests.exceptions.RequestException, TimeoutError) as exc:
            return SendResult(RETRY, self._transport_detail(exc, started))
        except FCMError as exc:  # pyfcm refused to build the message
            return SendResult(FAILED, f"invalid FCM message: {exc}")
        return classify(response)

    def _transport_detail(self, exc: Exception, started: float) -> str:
        took = time.monotonic() - started
        if took >= self.timeout:
            return f"no complete answer from FCM within {self.timeout:g} s ({type(exc).__name__})"
        return f"{type(exc).__name__}: {exc}"

    def send(
        self, items: Sequence[tuple[Any, str, dict[str, Any]]]
    ) -> Iterator[tuple[Any, SendResult] | None]:
        """Send ``(key, token, message)`` items; yield ``(key, result)`` as each completes, and
        ``None`` whenever nothing completed for a moment (the caller flushes its records)."""
        results: queue.Queue[tuple[Any, SendResult]] = queue.Queue()

        def done(key: Any, future: Future[SendResult]) -> None:
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - one bad send must not lose the others
                result = SendResult(RETRY, f"{type(exc).__name__}: {exc}")
            results.put((key, result))

        for key, token, message in items:
            future = self.pool.submit(self.send_one, token, message)
            future.add_done_callback(functools.partial(done, key))
        remaining = len(items)
        while remaining:
            try:
                item = results.get(timeout=0.02)
            except queue.Empty:
                yield None
                continue
            remaining -= 1
            yield item

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
