"""Push providers: FCM (pyfcm, HTTP v1), APNs (aioapns, HTTP/2), Web Push (pywebpush, VAPID).

:func:`sender_for` gives the worker process's sender for an app and platform, built lazily
after the fork (a client built in the parent is never used in a child) and cached per
(platform, app, credentials). It raises :class:`CredentialsError` when the app has no usable
credentials for the platform.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from config.settings import AppSettings, PushSettings
from workers.providers.base import CredentialsError, SendResult

__all__ = ["CredentialsError", "SendResult", "sender_for", "reset_senders"]

_lock = threading.Lock()
_senders: dict[tuple[Any, ...], Any] = {}
_pid: int | None = None


def _key(platform: str, app: AppSettings, push: PushSettings) -> tuple[Any, ...]:
    return (platform, app.id, app.push.model_dump_json(), push.model_dump_json())


def sender_for(platform: str, app: AppSettings, push: PushSettings) -> Any:
    global _pid
    with _lock:
        if _pid != os.getpid():
            _senders.clear()
            _pid = os.getpid()
        key = _key(platform, app, push)
        sender = _senders.get(key)
        if sender is None:
            sender = _build(platform, app, push)
            _senders[key] = sender
        return sender


def _build(platform: str, app: AppSettings, push: PushSettings) -> Any:
    creds = app.push
    if platform == "fcm":
        if not creds.fcm_service_account:
            raise CredentialsError("no FCM service account is configured for this app")
        from workers.providers.fcm import FcmSender

        return FcmSender(creds.fcm_service_account, push)
    if platform == "apns":
        if not (creds.apns_key and creds.apns_key_id and creds.apns_team_id and creds.apns_topic):
            raise CredentialsError("no APNs key is configured for this app")
        from workers.providers.apns import ApnsSender

        return ApnsSender(
            creds.apns_key,
            creds.apns_key_id,
            creds.apns_team_id,
            creds.apns_topic,
            creds.apns_environment == "sandbox",
            push,
        )
    if platform == "web":
        if not (creds.web_vapid_private_key and creds.web_vapid_subject):
            raise CredentialsError("no VAPID key is configured for this app")
        from workers.providers.webpush import WebPushSender

        return WebPushSender(creds.web_vapid_private_key, creds.web_vapid_subject, push)
    raise CredentialsError(f"unsupported platform {platform!r}")


def reset_senders() -> None:
    with _lock:
        for sender in _senders.values():
            try:
                sender.close()
            except Exception:  # noqa: BLE001
                pass
        _senders.clear()
