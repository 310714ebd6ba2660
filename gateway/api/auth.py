"""Pusher REST request authentication for the Flask blueprints.

The string to sign is ``METHOD\\npath\\nsorted query`` (gateway/protocol/signatures.py):

- the path is the one the client addressed: ``request.script_root + request.path`` (the
  script root is empty unless the app is mounted under a prefix, which the client signed too);
- query values are the decoded ones (the Python SDK does not URL-encode them at all; the
  Node SDK encodes them; both sign the decoded text); a repeated key is comma-joined;
- the Python SDK sends ``body_md5`` on GETs too (MD5 of the empty body): verified like any
  other ``body_md5``.
"""

from __future__ import annotations

import time

from flask import request

from config.settings import AppSettings, Settings
from gateway.protocol.errors import AuthenticationFailed, Forbidden, NotFound
from gateway.protocol.signatures import verify_rest_request


def query_params() -> dict[str, str]:
    return {k: ",".join(request.args.getlist(k)) for k in request.args}


def signed_path() -> str:
    return request.script_root + request.path


def find_app(settings: Settings, app_id: str) -> AppSettings:
    app = settings.app_by_id(app_id)
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


def authenticate_app_id(settings: Settings, app_id: str) -> AppSettings:
    app = find_app(settings, app_id)
    authenticate(settings, app)
    return app


def authenticate_by_key(settings: Settings) -> AppSettings:
    """For paths without ``/apps/{id}`` (the Python SDK's terminate_connections)."""
    key = request.args.get("auth_key")
    app = settings.app_by_key(key) if key else None
    if app is None:
        raise AuthenticationFailed("Invalid auth_key: no app has this key")
    authenticate(settings, app)
    return app
