"""The Pusher Channels REST API (reference: pusher-channels-protocol.md, section 5).

Every route is signed (gateway/api/auth.py) and answers JSON, ``{}`` at least: the Python SDK
``json.loads`` every successful body.

Publishing (``/events``, ``/batch_events``) validates everything first, then gives each event
its channel serial and appends it to history in one Redis script
(``History.accept_and_enqueue``), which also enqueues one ``clarion.live.deliver`` task for
the whole request (the task message is built by gateway/api/deliver_message.py) or lets it
ride on a task already queued: the events are accepted with their task or not at all, and a
Redis failure answers 503. With a broker other than the state Redis the script only decides,
and the API sends the task itself when one is needed (gateway/api/live_sender.py). A publish
with an idempotency key is accepted only once within the key's window
(gateway/api/idempotency.py), decided by the same script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from config.settings import AppSettings
from gateway.api import idempotency
from gateway.api.app import ApiContext, ctx
from gateway.api.auth import authenticate_app_id, authenticate_by_key
from gateway.api.jsonbody import parse_json
from gateway.protocol.errors import BadRequest, IdempotencyKeyReused, PayloadTooLarge
from gateway.protocol.names import (
    ChannelKind,
    channel_kind,
    channel_name_problem,
    event_name_problem,
    is_cache_channel,
    is_socket_id,
)
from gateway.state import occupancy, presence
from gateway.state.bus import Terminate
from gateway.state.cache import ChannelCache
from gateway.state.idempotency import IdempotencyClaim, SeenRequest

bp = Blueprint("channels", __name__)

DELIVER_TASK = "clarion.live.deliver"
USER_COUNT, SUBSCRIPTION_COUNT = "user_count", "subscription_count"
EVENT_INFO = frozenset({USER_COUNT, SUBSCRIPTION_COUNT})
CACHE = "cache"
# GET /channels/{name}: also "cache" (cache channels' last event and its TTL left).
CHANNEL_INFO = EVENT_INFO | {CACHE}
MAX_USER_ID = 200


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Publish:
    """One validated publish: an event to one or more channels."""

    event: str
    data: str
    channels: list[str]
    exclude: str | None
    info: frozenset[str]


def _json_body() -> dict[str, Any]:
    return parse_json(request.get_data(cache=True))  # type: ignore[no-any-return]


def _parse_info(raw: object, allowed: frozenset[str], where: str = "") -> frozenset[str]:
    if raw is None:
        return frozenset()
    if isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        raw = ",".join(raw)
    if not isinstance(raw, str):
        raise BadRequest(f"{where}info must be a comma-separated string of attributes.")
    attrs = frozenset(a.strip() for a in raw.split(",") if a.strip())
    unknown = sorted(attrs - allowed)
    if unknown:
        raise BadRequest(
            f"{where}info attribute(s) {', '.join(unknown)} not supported; "
            f"use {', '.join(sorted(allowed))}."
        )
    return attrs


def check_channel(name: object, where: str = "") -> str:
    problem = channel_name_problem(name)
    if problem:
        raise BadRequest(f"{where}{problem} ({str(name)[:60]!r})")
    return name  # type: ignore[return-value]


def _parse_publish(
    app: AppSettings, item: dict[str, Any], *, batch: bool, where: str = ""
) -> Publish:
    name = item.get("name")
    problem = event_name_problem(name)
    if problem:
        raise BadRequest(f"{where}{problem}")

    if batch:
        if "channel" not in item:
            raise BadRequest(f"{where}Missing channel.")
        channels = [item["channel"]]
    elif "channels" in item:
        channels = item["channels"]
        if not isinstance(channels, list):
            raise BadRequest("channels must be a list of channel names.")
    elif "channel" in item:
        channels = [item["channel"]]
    else:
        raise BadRequest("Missing channels: give channels (a list) or channel.")
    if not channels:
        raise BadRequest(f"{where}At least one channel is required.")
    if len(channels) > app.max_channels_per_event:
        raise BadRequest(
            f"{where}Too many channels: at most {app.max_channels_per_event} per event, "
            f"{len(channels)} given."
        )
    unique: list[str] = list(dict.fromkeys(check_channel(c, where) for c in channels))

    data = item.get("data")
    if not isinstance(data, str):
        raise BadRequest(f"{where}data must be a string (JSON-encode objects first).")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > app.max_event_bytes:
        raise PayloadTooLarge(
            f"{where}The event data should be at most {app.max_event_bytes} bytes "
            f"({size} given)."
        )

    socket_id = item.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise BadRequest(f"{where}Invalid socket_id {str(socket_id)[:40]!r}: expected 123.456")

    info = _parse_info(item.get("info"), EVENT_INFO, where)
    return Publish(name, data, unique, socket_id, info)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- publishing


EMPTY = b"{}"  # the usual answer to a publish


def _answer(body: bytes, replayed: bool = False) -> Response:
    response = Response(body, content_type="application/json")
    if replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


def _accept_and_enqueue(
    c: ApiContext, app: AppSettings, publishes: list[Publish],
    claim: IdempotencyClaim | None = None, via: str = "rest",
) -> SeenRequest | None:
    """Accept ``publishes`` (with ``claim``: unless its key was used, then what it holds);
    ``via``: who sent them, for the debug log (rest, dashboard)."""
    events = [(ch, p.event, p.data, p.exclude) for p in publishes for ch in p.channels]
    if not events:
        return None
    app_id = app.id
    limits = c.settings.history_of(app)
    # Serials, history, and the decision whether the request needs a task of its own or rides
    # on one already queued, in one script (one round trip, atomic).
    deliver = c.deliver
    message = deliver.pieces(app_id, events)
    result = c.history.accept_and_enqueue(
        app_id, events, deliver.queue_key, message.head, message.body, message.tail,
        limits, claim)
    if isinstance(result, SeenRequest):
        return result
    links, queued = result
    if queued and not deliver.written_by_script:
        queued = c.live_sender.send(app_id, events, links)
    if c.debuglog is not None and c.debuglog.watching(app_id):
        c.debuglog.write([
            (app_id, "api_event", {"channel": ch, "event": name, "bytes": len(data),
                                   "serial": serial, "via": via, "data": data})
            for (ch, name, data, _), (serial, _prev) in zip(events, links, strict=True)])
    metrics = c.metrics
    metrics.child(metrics.events_accepted, app_id).inc(len(events))
    if queued:
        metrics.child(metrics.tasks_enqueued, DELIVER_TASK).inc()
    return None


def publish_one(c: ApiContext, app: AppSettings, item: dict[str, Any], via: str) -> Publish:
    """One event (``name``, ``channel``, ``data``) validated and accepted as ``POST
    /events`` accepts it, for callers other than the REST API (the dashboard's creator)."""
    publish = _parse_publish(app, item, batch=False)
    _accept_and_enqueue(c, app, [publish], via=via)
    return publish


def _publish(
    c: ApiContext, app: AppSettings, endpoint: str, publishes: list[Publish], key: str | None,
    respond: Callable[[], bytes],
) -> Response:
    """Accept ``publishes`` and answer ``respond()``. With an idempotency ``key``, only the
    first request with it (within the window) is accepted, and each is answered the same."""
    if key is None:
        _accept_and_enqueue(c, app, publishes)
        return _answer(respond())
    records = c.idempotency
    window = c.settings.idempotency_window_of(app)
    known = None if any(p.info for p in publishes) else EMPTY
    claim = idempotency.claim(records, app.id, key, window, endpoint, publishes, known)
    seen = _accept_and_enqueue(c, app, publishes, claim)
    if seen is None:
        if known is not None:
            return _answer(known)
        return _answer(records.save_response(claim.key, respond()))
    outcome = "replayed"
    try:
        return _answer(
            idempotency.answer_again(records, claim, seen, key, window, respond), replayed=True)
    except IdempotencyKeyReused:
        outcome = "conflict"
        raise
    finally:
        c.metrics.child(c.metrics.idempotent_repeats, app.id, outcome).inc()


def _event_attributes(
    c: ApiContext, app_id: str, channel: str, info: frozenset[str]
) -> dict[str, int]:
    """The ``info`` attributes that apply to ``channel``: user_count for presence channels,
    subscription_count for the others."""
    out: dict[str, int] = {}
    is_presence = channel_kind(channel) is ChannelKind.PRESENCE
    if USER_COUNT in info and is_presence:
        out[USER_COUNT] = presence.user_count(c.redis, c.keys, app_id, channel)
    if SUBSCRIPTION_COUNT in info and not is_presence:
        out[SUBSCRIPTION_COUNT] = occupancy.subscription_count(
            c.redis, c.keys, app_id, channel, c.settings.websocket.node_timeout
        )
    return out


@bp.post("/apps/<app_id>/events")
def trigger(app_id: str) -> ResponseReturnValue:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    body = _json_body()
    key = idempotency.key_of(request.headers, body)
    publish = _parse_publish(app, body, batch=False)

    def respond() -> bytes:
        if not publish.info:
            return EMPTY
        return orjson.dumps({"channels": {
            ch: _event_attributes(c, app.id, ch, publish.info) for ch in publish.channels}})

    return _publish(c, app, "events", [publish], key, respond)


@bp.post("/apps/<app_id>/batch_events")
def trigger_batch(app_id: str) -> ResponseReturnValue:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    body = _json_body()
    key = idempotency.key_of(request.headers, body)
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise BadRequest("batch must be a list of events.")
    if len(batch) > app.max_batch_size:
        raise BadRequest(f"Cannot batch-send more than {app.max_batch_size} messages at once")
    publishes = []
    for i, item in enumerate(batch):
        where = f"batch[{i}]: "
        if not isinstance(item, dict):
            raise BadRequest(f"{where}each batch item must be a JSON object.")
        idempotency.refuse_in_item(item, where)
        publishes.append(_parse_publish(app, item, batch=True, where=where))

    def respond() -> bytes:
        if not any(p.info for p in publishes):
            return EMPTY
        return orjson.dumps({"batch": [
            _event_attributes(c, app.id, p.channels[0], p.info) if p.info else {}
            for p in publishes]})

    return _publish(c, app, "batch_events", publishes, key, respond)


# --------------------------------------------------------------------------- queries


@bp.get("/apps/<app_id>/channels")
def channels_index(app_id: str) -> ResponseReturnValue:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    prefix = request.args.get("filter_by_prefix", "")
    info = _parse_info(request.args.get("info"), EVENT_INFO)
    if USER_COUNT in info and not prefix.startswith("presence-"):
        raise BadRequest(
            "info=user_count is only available with filter_by_prefix=presence- "
            "(user counts exist for presence channels only)."
        )
    counts = occupancy.subscription_counts(
        c.redis, c.keys, app.id, c.settings.websocket.node_timeout
    )
    names = sorted(name for name in counts if name.startswith(prefix))
    user_counts: dict[str, int] = {}
    if USER_COUNT in info:
        pipe = c.redis.pipeline(transaction=False)
        for name in names:
            pipe.hlen(c.keys.presence_members(app.id, name))
        user_counts = dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
    result: dict[str, dict[str, int]] = {}
    for name in names:
        attrs: dict[str, int] = {}
        if USER_COUNT in info and name in user_counts:
            attrs[USER_COUNT] = user_counts[name]
        if SUBSCRIPTION_COUNT in info and channel_kind(name) is not ChannelKind.PRESENCE:
            attrs[SUBSCRIPTION_COUNT] = counts[name]
        result[name] = attrs
    return jsonify(channels=result)


@bp.get("/apps/<app_id>/channels/<channel>")
def channel_show(app_id: str, channel: str) -> ResponseReturnValue:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    check_channel(channel)
    info = _parse_info(request.args.get("info"), CHANNEL_INFO)
    is_presence = channel_kind(channel) is ChannelKind.PRESENCE
    if USER_COUNT in info and not is_presence:
        raise BadRequest("info=user_count is only available for presence channels.")
    if SUBSCRIPTION_COUNT in info and is_presence:
        raise BadRequest("info=subscription_count is not available for presence channels.")
    subscriptions = occupancy.subscription_count(
        c.redis, c.keys, app.id, channel, c.settings.websocket.node_timeout
    )
    users = presence.user_count(c.redis, c.keys, app.id, channel) if is_presence else 0
    body: dict[str, Any] = {"occupied": subscriptions > 0 or users > 0}
    if USER_COUNT in info:
        body[USER_COUNT] = users
    if SUBSCRIPTION_COUNT in info:
        body[SUBSCRIPTION_COUNT] = subscriptions
    if CACHE in info:
        body[CACHE] = (
            ChannelCache(c.redis, c.keys, c.settings.cache.ttl).info(app.id, channel)
            if is_cache_channel(channel) else None
        )
    return jsonify(body)


@bp.get("/apps/<app_id>/channels/<channel>/users")
def channel_users(app_id: str, channel: str) -> ResponseReturnValue:
    c = ctx()
    app = authenticate_app_id(c.settings, app_id)
    check_channel(channel)
    if channel_kind(channel) is not ChannelKind.PRESENCE:
        raise BadRequest("Users can only be retrieved for presence channels.")
    ids = presence.user_ids(c.redis, c.keys, app.id, channel)
    return jsonify(users=[{"id": uid} for uid in ids])


# --------------------------------------------------------------------------- users


def _terminate(c: ApiContext, app: AppSettings, user_id: str) -> ResponseReturnValue:
    if not user_id or len(user_id) > MAX_USER_ID:
        raise BadRequest(f"The user id must be 1 to {MAX_USER_ID} characters.")
    c.redis.publish(c.keys.bus, Terminate(app.id, user_id).encode())
    return jsonify({})


@bp.post("/apps/<app_id>/users/<user_id>/terminate_connections")
def terminate_connections(app_id: str, user_id: str) -> ResponseReturnValue:
    c = ctx()
    return _terminate(c, authenticate_app_id(c.settings, app_id), user_id)


@bp.post("/users/<user_id>/terminate_connections")
def terminate_connections_by_key(user_id: str) -> ResponseReturnValue:
    """The Python SDK's path: no app id, the app is the one owning ``auth_key``."""
    c = ctx()
    return _terminate(c, authenticate_by_key(c.settings), user_id)
