"""The History API: ``GET /apps/{app_id}/channels/{channel}/events?after=S&limit=N``
(docs/resume.md, "History API").

A channel's logged events with a serial above ``after`` (default 0: from the oldest the log
still has), oldest first, at most ``limit`` (default 100, at most 1,000) per page:

    {"events": [{"serial": S, "event": NAME, "data": DATA}, ...],
     "serial": CURRENT, "next": N, "has_more": false, "complete": true}

``next`` is the ``after`` of the following page (and where a poller goes on from);
``complete`` is false, with ``"reason": "expired" | "reset"``, when the events right after
``after`` are no longer all in the log (gateway/state/history.py, HistoryPage). Signed like
every REST route; a channel with no log is an empty page, not an error. The excluded socket
id of each event stays private: it is the publisher's business, not the reader's.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from gateway.api.app import ctx
from gateway.api.auth import authenticate_app_id
from gateway.api.channels import check_channel
from gateway.protocol.errors import BadRequest
from gateway.state.history import HistoryPage

bp = Blueprint("history", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Serials are below 2^53 (docs/resume.md): exact as JSON numbers in JavaScript and as Redis
# sorted set scores, which are doubles.
MAX_SERIAL = 2**53 - 1


def _integer(name: str, low: int, high: int, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # Digits only: int() would also take " 7", "+7", "7_000" and non-ASCII digits.
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 20 else None
    if value is None or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high} ({raw[:30]!r} given).")
    return value


def page_json(page: HistoryPage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "events": [{"serial": e.serial, "event": e.event, "data": e.data} for e in page.events],
        "serial": page.serial,
        "next": page.next,
        "has_more": page.has_more,
        "complete": page.gap is None,
    }
    if page.gap is not None:
        body["reason"] = page.gap
    return body


@bp.get("/apps/<app_id>/channels/<channel>/events")
def channel_events(app_id: str, channel: str) -> Response:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    check_channel(channel)
    after = _integer("after", 0, MAX_SERIAL, 0)
    limit = _integer("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    page = c.history.page(app.id, channel, after, limit)
    return Response(orjson.dumps(page_json(page)), content_type="application/json")
