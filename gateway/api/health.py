"""``GET /health`` (the process answers) and ``GET /ready`` (and can reach Redis)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> ResponseReturnValue:
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    try:
        current_app.extensions["clarion"].redis.ping()
    except RedisError as exc:
        return jsonify(status="unavailable", error=f"Redis: {exc}", code=503), 503
    return jsonify(status="ok")
