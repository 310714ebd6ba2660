"""The Beams blueprint, its error shape, and helpers shared by the route modules."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError as KombuOperationalError

from config.settings import AppSettings
from gateway.api.jsonbody import parse_json
from gateway.protocol.errors import InvalidJson
from gateway.state.redis_client import TRANSIENT_ERRORS

log = logging.getLogger("clarion.beams")

bp = Blueprint("beams", __name__)


class BeamsError(Exception):
    """A refusal in Beams' shape: ``{"error": title, "description": text}``."""

    def __init__(
        self, status: int, error: str, description: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}


def beams_response(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Response:
    response = jsonify(error=error, description=description)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.errorhandler(BeamsError)
def _beams_error(exc: BeamsError) -> Response:
    return beams_response(exc.status, exc.error, exc.description, exc.headers)


def _unavailable(exc: Exception) -> Response:
    log.warning("Beams API: Redis unavailable: %s", exc)
    return beams_response(503, "Service Unavailable", "Redis cannot be reached; try again")


for _error in TRANSIENT_ERRORS:
    bp.register_error_handler(_error, _unavailable)


@bp.errorhandler(KombuOperationalError)
def _broker_unavailable(exc: Exception) -> Response:
    log.warning("Beams API: the broker did not take the task: %s", exc)
    return beams_response(503, "Service Unavailable", "The task broker cannot be reached; "
                          "try again")


def find_app(instance_id: str) -> AppSettings:
    """The instance's app as the app resolver has it now (config overlaid by the store)."""
    from gateway.api.beams import beams_ctx

    app = beams_ctx().apps.by_id(instance_id)
    if app is None:
        raise BeamsError(404, "Instance not found", f"Could not find the instance {instance_id!r}")
    return app


def check_enabled(app: AppSettings) -> AppSettings:
    if not app.enabled:
        raise BeamsError(403, "Forbidden", f"The instance {app.id} is disabled")
    return app


def app_for(instance_id: str) -> AppSettings:
    """For the device API (no secret): the instance's app, refused if absent or disabled."""
    return check_enabled(find_app(instance_id))


def authorised_app(instance_id: str) -> AppSettings:
    """For the publish and customer APIs: the secret key is checked before anything is said
    about the instance beyond its existence."""
    app = find_app(instance_id)
    require_secret(app)
    return check_enabled(app)


def secret_key(app: AppSettings) -> str:
    return app.push.beams_secret_key or app.secret


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_secret(app: AppSettings) -> None:
    token = bearer()
    if token is None:
        raise BeamsError(401, "Unauthorized", "Missing or malformed Authorization header")
    if not hmac.compare_digest(token.encode(), secret_key(app).encode()):
        raise BeamsError(401, "Unauthorized", "Incorrect API Key")


def json_body(max_bytes: int, *, strict_type: bool = False) -> dict[str, Any]:
    """The request's JSON object, refused with 413 over ``max_bytes`` and 400 if it is not a
    JSON object the shared parser takes (gateway/api/jsonbody.py)."""
    if strict_type and request.mimetype != "application/json":
        raise BeamsError(400, "Bad Request", "Content-Type must be application/json")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BeamsError(
            413, "Payload Too Large", f"Request body must be at most {max_bytes} bytes"
        )
    raw = request.get_data(cache=False)
    if len(raw) > max_bytes:
        raise BeamsError(
            413, "Payload Too Large", f"Request body must be at most {max_bytes} bytes"
        )
    try:
        return parse_json(raw)  # type: ignore[no-any-return]
    except InvalidJson as exc:
        raise BeamsError(400, "Bad Request", exc.message) from None


def ok(body: dict[str, Any] | None = None) -> Response:
    return jsonify(body or {})
