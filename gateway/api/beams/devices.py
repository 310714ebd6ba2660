"""The Beams device API: ``/device_api/v1/instances/{id}/devices/...``."""

from __future__ import annotations

from typing import Any

import jwt
from flask import Response, request

from gateway.api.beams import beams_ctx
from gateway.api.beams.common import BeamsError, app_for, bearer, bp, json_body, ok, secret_key
from gateway.state.devices import (
    MAX_INTERESTS_PER_DEVICE,
    MAX_TOKEN_LENGTH,
    MAX_USER_ID_LENGTH,
    PLATFORMS,
    Device,
    parse_web_subscription,
    valid_interest,
)
from gateway.vapid import VapidKeyError, load_vapid, public_key_b64

PREFIX = "/device_api/v1/instances/<instance_id>"
MAX_DEVICE_BODY = 64 * 1024
# A Beams JWT may be some seconds out of step with our clock.
JWT_LEEWAY = 60


def _platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise BeamsError(404, "Not Found", f"Unknown platform {platform!r}")
    return platform


def _device(instance_id: str, platform: str, device_id: str) -> Device:
    _platform(platform)
    device = None
    if device_id.startswith(platform + "-"):
        device = beams_ctx().devices.get(instance_id, device_id)
    if device is None or device.platform != platform:
        raise BeamsError(404, "Device not found", f"Device {device_id!r} could not be found")
    return device


def _token(body: dict[str, Any]) -> str:
    token = body.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        # "InvalidToken": the Android SDK stops retrying a registration on that title only.
        raise BeamsError(400, "InvalidToken", "token must be a non-empty string")
    return token


def _metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BeamsError(400, "Bad Request", "metadata must be an object")
    return metadata


def check_interest(name: Any) -> str:
    if not valid_interest(name):
        raise BeamsError(
            400,
            "Invalid interest name",
            f"Interest {name!r} is not valid: interests are 1 to 164 characters of "
            "A-Z, a-z, 0-9 and _-=@,.;",
        )
    return name  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- registration


@bp.get(PREFIX + "/web-vapid-public-key")
def web_vapid_public_key(instance_id: str) -> Response:
    """What the web SDK subscribes the browser with, before it registers the device."""
    app = app_for(instance_id)
    if not app.push.web_vapid_private_key:
        raise BeamsError(404, "Not Found", "Web Push is not configured for this instance")
    try:
        public = public_key_b64(load_vapid(app.push.web_vapid_private_key))
    except VapidKeyError as exc:
        raise BeamsError(500, "Internal Server Error", str(exc)) from None
    return ok({"vapidPublicKey": public})



@bp.post(PREFIX + "/devices/<platform>")
def register_device(instance_id: str, platform: str) -> Response:
    app_for(instance_id)
    platform = _platform(platform)
    body = json_body(MAX_DEVICE_BODY)
    token = _token(body)
    if platform == "web":
        try:
            parse_web_subscription(token)
        except ValueError as exc:
            raise BeamsError(400, "InvalidToken", f"Invalid web token: {exc}") from None
    metadata = _metadata(body)
    previous = body.get("knownPreviousClientIds") or []
    if not isinstance(previous, list):
        raise BeamsError(400, "Bad Request", "knownPreviousClientIds must be an array")
    bundle = body.get("bundleIdentifier")
    if bundle is not None and not isinstance(bundle, str):
        raise BeamsError(400, "Bad Request", "bundleIdentifier must be a string")
    device_id, interests = beams_ctx().devices.register(
        instance_id, platform, token, metadata, [p for p in previous if isinstance(p, str)],
        bundle=bundle if platform == "apns" else None,
    )
    return ok({"id": device_id, "initialInterestSet": interests})


@bp.get(PREFIX + "/devices/<platform>/<device_id>")
def get_device(instance_id: str, platform: str, device_id: str) -> Response:
    app_for(instance_id)
    device = _device(instance_id, platform, device_id)
    return ok({"id": device.id, "userId": device.user_id or "", "metadata": device.metadata or {}})


@bp.delete(PREFIX + "/devices/<platform>/<device_id>")
def delete_device(instance_id: str, platform: str, device_id: str) -> Response:
    app_for(instance_id)
    _platform(platform)
    if device_id.startswith(platform + "-"):
        beams_ctx().devices.delete(instance_id, device_id)
    return ok()


@bp.put(PREFIX + "/devices/<platform>/<device_id>/metadata")
def put_metadata(instance_id: str, platform: str, device_id: str) -> Response:
    app_for(instance_id)
    _device(instance_id, platform, device_id)
    metadata = json_body(MAX_DEVICE_BODY)
    beams_ctx().devices.set_metadata(instance_id, device_id, metadata)
    return ok()


@bp.put(PREFIX + "/devices/fcm/<device_id>/token")
def put_token(instance_id: str, device_id: str) -> Response:
    app_for(instance_id)
    _device(instance_id, "fcm", device_id)
    token = _token(json_body(MAX_DEVICE_BODY))
    beams_ctx().devices.update_token(instance_id, device_id, token)
    return ok()


# --------------------------------------------------------------------------- users


@bp.put(PREFIX + "/devices/<platform>/<device_id>/user")
def put_user(instance_id: str, platform: str, device_id: str) -> Response:
    app = app_for(instance_id)
    token = bearer()
    if token is None:
        raise BeamsError(401, "Unauthorized", "Missing or malformed Authorization header")
    _device(instance_id, platform, device_id)
    user_id = _user_from_jwt(token, instance_id, secret_key(app))
    result = beams_ctx().devices.set_user(instance_id, device_id, user_id)
    if result == "missing":
        raise BeamsError(404, "Device not found", f"Device {device_id!r} could not be found")
    if result == "conflict":
        raise BeamsError(400, "Bad Request", "A User Id is already associated with this device.")
    if result == "full":
        raise BeamsError(
            422, "Too many devices", "This user already has 100 devices on this platform"
        )
    return ok()


def _user_from_jwt(token: str, instance_id: str, secret: str) -> str:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            leeway=JWT_LEEWAY,
            options={"require": ["exp", "sub", "iss"], "verify_iss": False},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise BeamsError(400, "Bad Request", f"JWT is missing the {exc.claim!r} claim") from None
    except jwt.ExpiredSignatureError:
        raise BeamsError(401, "Unauthorized", "JWT has expired") from None
    except jwt.InvalidTokenError as exc:
        raise BeamsError(401, "Unauthorized", f"Invalid JWT: {exc}") from None
    if claims.get("iss") != f"https://{instance_id}.pushnotifications.pusher.com":
        raise BeamsError(403, "Forbidden", "Invalid JWT issuer")
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
        raise BeamsError(400, "Bad Request", "JWT 'sub' must be a user id of 1 to 164 characters")
    return user_id


# --------------------------------------------------------------------------- interests


@bp.get(PREFIX + "/devices/<platform>/<device_id>/interests")
def get_interests(instance_id: str, platform: str, device_id: str) -> Response:
    app_for(instance_id)
    _device(instance_id, platform, device_id)
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        raise BeamsError(400, "Bad Request", "limit must be an integer") from None
    limit = max(1, min(100, limit))
    names, cursor = beams_ctx().devices.interests_page(
        instance_id, device_id, limit, request.args.get("cursor") or None
    )
    meta = {"nextCursor": cursor} if cursor else {}
    return ok({"interests": names, "responseMetadata": meta})


@bp.put(PREFIX + "/devices/<platform>/<device_id>/interests")
def put_interests(instance_id: str, platform: str, device_id: str) -> Response:
    app_for(instance_id)
    _device(instance_id, platform, device_id)
    body = json_body(2 * 1024 * 1024)
    interests = body.get("interests")
    if not isinstance(interests, list):
        raise BeamsError(400, "Bad Request", "interests must be an array")
    unique = list(dict.fromkeys(check_interest(i) for i in interests))
    if len(unique) > MAX_INTERESTS_PER_DEVICE:
        raise BeamsError(
            400,
            "Too many interests",
            f"A device can have at most {MAX_INTERESTS_PER_DEVICE} interests",
        )
    beams_ctx().devices.set_interests(instance_id, device_id, unique)
    return ok()


@bp.post(PREFIX + "/devices/<platform>/<device_id>/interests/<interest>")
def add_interest(instance_id: str, platform: str, device_id: str, interest: str) -> Response:
    app_for(instance_id)
    _device(instance_id, platform, device_id)
    result = beams_ctx().devices.add_interest(instance_id, device_id, check_interest(interest))
    if result == "missing":
        raise BeamsError(404, "Device not found", f"Device {device_id!r} could not be found")
    if result == "full":
        raise BeamsError(
            400,
            "Too many interests",
            f"A device can have at most {MAX_INTERESTS_PER_DEVICE} interests",
        )
    return ok()


@bp.delete(PREFIX + "/devices/<platform>/<device_id>/interests/<interest>")
def remove_interest(instance_id: str, platform: str, device_id: str, interest: str) -> Response:
    app_for(instance_id)
    _device(instance_id, platform, device_id)
    beams_ctx().devices.remove_interest(instance_id, device_id, check_interest(interest))
    return ok()
