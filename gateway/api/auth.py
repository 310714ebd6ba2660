"""Pusher REST request authentication for the Flask blueprints.

The string to sign is ``METHOD\\npath\\nsorted query`` (gateway/protocol/signatures.py):

- the path is the one the client addressed: ``request.script_root + request.path`` (the
  script root is empty unless the app is mounted under a prefix, which the client signed too);
- query values are the decoded ones (the Python SDK does not URL-encode them at all; the
  Node SDK encodes them; both sign the decoded text); a repeated key is comma-joined;
- the Python SDK sends ``body_md5`` on GETs too (MD5 of the empty body): verified like any
  other ``body_md5``.

Apps are looked up through the app resolver (config apps overlaid by ``clarion apps``'
Redis store, gateway/state/apps.py), so a rotated secret or a disabled app takes effect
within a second. An app with ``max_api_requests_per_second`` gets 429 + ``Retry-After``
past it (counted in Redis across API processes, after the signature is verified).
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app, has_app_context, request

from config.settings import AppSettings, Settings
from gateway.protocol.errors import AuthenticationFailed, Forbidden, NotFound, TooManyRequests
from gateway.protocol.signatures import verify_rest_request
from gateway.state.ratelimit import ApiRateLimiter


def query_params() -> dict[str, str]:
    return {k: ",".join(v) for k, v in request.args.lists()}


def signed_path() -> str:
    return request.script_root + request.path


def _resolver(settings: Settings) -> Any:
    """The API's app resolver when serving a request, else the settings' own apps."""
    c = current_app.extensions.get("clarion") if has_app_context() else None
    resolver = getattr(c, "apps", None)
    return resolver if resolver is not None else settings


def find_app(settings: Settings, app_id: str) -> AppSettings:
    resolver = _resolver(settings)
    app = resolver.by_id(app_id) if resolver is not settings else settings.app_by_id(app_id)
    if app is None:
        raise NotFound(f"The app {app_id} could not be found.")
    return app


def authenticate(settings: Settings, app: AppSettings) -> None:
    """Raise AuthenticationFailed (401) or Forbidden (403) unless the request may proceed."""
    verify_rest_request(
        key=app.key,
        secret=app.secret,
        method=request.method,
        path=signed_path(),
        params=query_params(),
        body=request.get_data(cache=True),
        now=time.time(),
        window=settings.api.timestamp_window,
    )
    if not app.enabled:
        raise Forbidden(f"The app {app.id} is disabled.")
    limit = app.max_api_requests_per_second
    if limit is not None:
        _check_rate(app.id, limit)


def _check_rate(app_id: str, limit: int) -> None:
    limiter = current_app.extensions.get("clarion.rate_limiter")
    if limiter is None:
        c = current_app.extensions["clarion"]
        limiter = current_app.extensions["clarion.rate_limiter"] = ApiRateLimiter(
            c.redis, c.keys)
    wait = limiter.retry_after(app_id, limit)
    if wait is not None:
        raise TooManyRequests(
            f"Too many requests: the app {app_id} allows {limit} API requests per second.",
            retry_after=wait,
        )


def authenticate_app_id(settings: Settings, app_id: str) -> AppSettings:
    app = find_app(settings, app_id)
    authenticate(settings, app)
    return app


def authenticate_by_key(settings: Settings) -> AppSettings:
    """For paths without ``/apps/{id}`` (the Python SDK's terminate_connections)."""
    key = request.args.get("auth_key")
    resolver = _resolver(settings)
    app = (resolver.by_key(key) if resolver is not settings else settings.app_by_key(key)
           ) if key else None
    if app is None:
        raise AuthenticationFailed("Invalid auth_key: no app has this key")
    authenticate(settings, app)
    return app
