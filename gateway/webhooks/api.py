"""Operator HTTP API for webhook deliveries, signed like the rest of the Pusher REST API.

    GET  /apps/{app}/webhooks/deliveries?status=pending|failed|dead|delivered&limit=&before=
    GET  /apps/{app}/webhooks/deliveries/{id}            one delivery with its attempts
    POST /apps/{app}/webhooks/deliveries/{id}/replay     make it due now
    POST /apps/{app}/webhooks/replay   {"status": "dead", "from_ms": .., "to_ms": ..}
    GET  /apps/{app}/webhooks/endpoints                  endpoints, disabled or failing
    POST /apps/{app}/webhooks/endpoints/{endpoint}/enable
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway.api.auth import authenticate_app_id
from gateway.api.jsonbody import parse_json
from gateway.protocol.errors import BadRequest, NotFound
from gateway.webhooks.store import DEAD, FAILED, STATUSES, Store

bp = Blueprint("webhooks", __name__)


def _store() -> Store:
    from gateway.api.app import ctx

    c = ctx()
    return Store(c.redis, c.keys, c.settings, getattr(c, "apps", None))


def _auth(app_id: str) -> None:
    from gateway.api.app import ctx

    authenticate_app_id(ctx().settings, app_id)


def _int_arg(name: str, default: int | None = None, lo: int = 0, hi: int | None = None) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


@bp.get("/apps/<app_id>/webhooks/deliveries")
def list_deliveries(app_id: str) -> Response:
    _auth(app_id)
    status = request.args.get("status", DEAD)
    if status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    store = _store()
    items = store.list(app_id, status, limit=_int_arg("limit", 50, 1, 1000),
                       before_ms=_int_arg("before"))
    return jsonify(status=status, counts=store.counts(app_id),
                   deliveries=[d.summary() for d in items])


@bp.get("/apps/<app_id>/webhooks/deliveries/<delivery_id>")
def show_delivery(app_id: str, delivery_id: str) -> Response:
    _auth(app_id)
    d = _store().load(delivery_id)
    if d is None or d.app_id != app_id:
        raise NotFound(f"No delivery {delivery_id}")
    return jsonify(d.detail())


@bp.post("/apps/<app_id>/webhooks/deliveries/<delivery_id>/replay")
def replay_delivery(app_id: str, delivery_id: str) -> Response:
    _auth(app_id)
    outcome = _store().replay(app_id, delivery_id)
    if outcome == "missing":
        raise NotFound(f"No delivery {delivery_id}")
    return jsonify(id=delivery_id, result=outcome)


@bp.post("/apps/<app_id>/webhooks/replay")
def replay_many(app_id: str) -> Response:
    _auth(app_id)
    # No body means the defaults; a body that is not a JSON object is refused, never read as
    # "no filter" (which would replay every dead delivery).
    body = parse_json(request.get_data(cache=True), empty={})
    status = body.get("status", DEAD)
    if status not in (DEAD, FAILED):
        raise BadRequest("status must be dead or failed")
    bounds = []
    for name in ("from_ms", "to_ms"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise BadRequest(f"{name} must be an integer (unix ms)")
        bounds.append(v)
    ids = _store().replay_many(app_id, status, bounds[0], bounds[1])
    return jsonify(replayed=len(ids), ids=ids)


@bp.get("/apps/<app_id>/webhooks/endpoints")
def endpoints(app_id: str) -> Response:
    _auth(app_id)
    return jsonify(endpoints=_store().endpoints(app_id))


@bp.post("/apps/<app_id>/webhooks/endpoints/<endpoint_id>/enable")
def enable_endpoint(app_id: str, endpoint_id: str) -> Response:
    _auth(app_id)
    store = _store()
    if endpoint_id not in {e["endpoint_id"] for e in store.endpoints(app_id)}:
        raise NotFound(f"No endpoint {endpoint_id}")
    store.enable_endpoint(app_id, endpoint_id)
    return jsonify(endpoint_id=endpoint_id, disabled=False)
