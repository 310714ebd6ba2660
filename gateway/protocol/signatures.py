"""The one signing module: channel auth, user auth, REST request auth and webhooks.

All signatures are lowercase hex HMAC-SHA256 keyed with the app secret, compared in constant
time. Strings are signed exactly as received: the Python SDK emits ``json.dumps`` with spaces,
PHP and Node emit compact JSON, so nothing is ever re-serialised before verifying.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from gateway.protocol.errors import AuthenticationFailed

AUTH_VERSION = "1.0"


def sign(secret: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def signature_matches(secret: str, message: str | bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, message), signature.encode("ascii", "replace").decode())


def channel_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_string(socket_id: str, user_data: str) -> str:
    return f"{socket_id}::user::{user_data}"


def auth_token(key: str, secret: str, message: str) -> str:
    """The ``auth`` value a server SDK returns for a subscription or sign-in."""
    return f"{key}:{sign(secret, message)}"


def token_matches(key: str, secret: str, token: object, message: str) -> bool:
    """Whether ``token`` is ``<key>:<hmac of message>``, checked in constant time."""
    if not isinstance(token, str):
        return False
    given_key, sep, digest = token.partition(":")
    if not sep:
        return False
    key_ok = hmac.compare_digest(given_key.encode(), key.encode())
    digest_ok = signature_matches(secret, message, digest)
    return key_ok and digest_ok


# --------------------------------------------------------------------------- webhooks


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature``: hex HMAC-SHA256 of the exact body bytes sent."""
    return sign(secret, body)


def standard_webhook_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` (Standard Webhooks v1): ``v1,`` + base64 HMAC-SHA256 of
    ``{id}.{timestamp}.{body}``, keyed with the decoded ``whsec_`` secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_webhook_key(signing_secret: str | None, app_secret: str) -> bytes:
    """The HMAC key of an endpoint: its ``whsec_<base64>`` secret, else the app secret."""
    if signing_secret:
        return base64.b64decode(signing_secret.removeprefix("whsec_"))
    return app_secret.encode()


# --------------------------------------------------------------------------- REST requests


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def rest_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\npath\\nsorted key=value&...`` over decoded values, without auth_signature."""
    items = sorted(
        (k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature"
    )
    query = "&".join(f"{k}={v}" for k, v in items)
    return f"{method.upper()}\n{path}\n{query}"


def sign_rest_request(
    key: str, secret: str, method: str, path: str, params: Mapping[str, str], body: bytes,
    timestamp: int,
) -> dict[str, str]:
    """The query parameters of a signed request (used by the bench tool and tests)."""
    signed = dict(params)
    signed.update(auth_key=key, auth_timestamp=str(timestamp), auth_version=AUTH_VERSION)
    if body:
        signed["body_md5"] = body_md5(body)
    signed["auth_signature"] = sign(secret, rest_string_to_sign(method, path, signed))
    return signed


def verify_rest_request(
    *,
    key: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes,
    now: float,
    window: int,
) -> None:
    """Raise AuthenticationFailed unless the request is signed the Pusher way."""
    if params.get("auth_key") != key:
        raise AuthenticationFailed("Invalid auth_key for this app")
    version = params.get("auth_version")
    if version is not None and version != AUTH_VERSION:
        raise AuthenticationFailed(f"Unsupported auth_version {version!r}; use 1.0")
    signature = params.get("auth_signature")
    if not signature:
        raise AuthenticationFailed("Missing auth_signature")
    _check_timestamp(params.get("auth_timestamp"), now, window)
    checked = dict(params)
    if body or "body_md5" in checked:
        actual = body_md5(body)
        given = checked.get("body_md5")
        if given is not None and not hmac.compare_digest(given, actual):
            raise AuthenticationFailed("body_md5 does not match the request body")
        checked["body_md5"] = actual
    expected = rest_string_to_sign(method, path, checked)
    if not signature_matches(secret, expected, signature):
        raise AuthenticationFailed("Invalid signature: the auth_signature does not match")


def _check_timestamp(raw: str | None, now: float, window: int) -> None:
    try:
        ts = int(raw) if raw is not None else None
    except ValueError:
        ts = None
    if ts is None:
        raise AuthenticationFailed("Missing or malformed auth_timestamp")
    if abs(now - ts) > window:
        raise AuthenticationFailed(
            f"Timestamp expired: given timestamp ({ts}) not within {window}s "
            f"of server time ({int(now)})"
        )
