"""Sign-in and CSRF for the dashboard: one admin token, a signed session cookie.

The cookie (``clarion_dashboard``, path ``/dashboard``, HttpOnly, SameSite=Strict, Secure when
the API serves HTTPS) holds a CSRF token signed with a key derived from the admin token
(itsdangerous), so every API process accepts it and changing the token signs everyone out.
Actions (sending an event, a replay, revealing a secret, signing out) must send that CSRF
token back in the ``X-CSRF-Token`` header, which the page reads from ``GET
/dashboard/api/session``: another site can make the browser send the cookie (not with
SameSite=Strict, but older browsers) but cannot read the answer to learn the token.

Signed in by a cookie of our own rather than Flask's session, so the rest of the API (the
publish path) never opens a session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from flask import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.protocol.errors import ApiError, TooManyRequests

COOKIE = "clarion_dashboard"
CSRF_HEADER = "X-CSRF-Token"
# A sign-in lasts a working day; then the token is asked again.
MAX_AGE = 12 * 3600


class SignInRequired(ApiError):
    status = 401


class CsrfRefused(ApiError):
    status = 403


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison (of digests, so the length leaks nothing either)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


class SignInAttempts:
    """Failed sign-ins per client address and minute, shared by every API process
    (``P dbgsi:{address}:{minute}``, 2 minutes): past MAX_FAILURES a client waits for the next
    minute, so a token cannot be guessed at the speed of the API."""

    MAX_FAILURES = 10

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, address: str) -> tuple[str, int]:
        now = time.time()
        return f"{self.prefix}dbgsi:{address}:{int(now // 60)}", 60 - int(now % 60)

    def check(self, address: str) -> None:
        key, wait = self._key(address)
        if int(self.redis.get(key) or 0) >= self.MAX_FAILURES:
            raise TooManyRequests("Too many failed sign-ins: try again in a minute", wait)

    def failed(self, address: str) -> None:
        key, _ = self._key(address)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        pipe.execute()


class Sessions:
    def __init__(self, admin_token: str, secure: bool) -> None:
        self.admin_token = admin_token
        self.secure = secure
        key = hmac.new(admin_token.encode(), b"clarion dashboard session", "sha256").digest()
        self.serializer = URLSafeTimedSerializer(key, salt="clarion-dashboard")

    def new_session(self) -> tuple[str, str]:
        """A fresh session: its CSRF token and the cookie value holding it."""
        csrf = secrets.token_urlsafe(24)
        return csrf, self.serializer.dumps({"csrf": csrf})

    def set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=MAX_AGE, path="/dashboard", httponly=True,
                            samesite="Strict", secure=self.secure)

    def sign_out(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="Strict",
                               secure=self.secure)

    def current(self, request: Request) -> dict[str, Any]:
        """The request's session; SignInRequired (401) without a valid one."""
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self.serializer.loads(raw, max_age=MAX_AGE)
                if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                    return data
            except BadSignature:
                pass
        raise SignInRequired("Sign in with the admin token first")

    def check_action(self, request: Request) -> None:
        """A state-changing request: signed in and carrying the session's CSRF token."""
        session = self.current(request)
        given = request.headers.get(CSRF_HEADER, "")
        if not given or not tokens_match(given, session["csrf"]):
            raise CsrfRefused(f"Missing or wrong {CSRF_HEADER} header: reload the page")
