"""The dashboard blueprint: the page (``/dashboard``), its files, and the JSON it reads.

Registered by the app factory only when ``dashboard.enabled`` and ``dashboard.admin_token``
are set; otherwise ``/dashboard`` is a 404 like any unknown path. Every ``/dashboard/api/``
route but sign-in needs the session cookie (401 without), and every POST but sign-in the
CSRF header too (403 without). Refusals are JSON ``{"error", "code"}`` like the rest of the
API.
"""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    request,
    send_from_directory,
)

from config.settings import AppSettings, Settings
from gateway.api.app import ApiContext, ctx
from gateway.api.jsonbody import parse_json
from gateway.dashboard import debuglog, overview, timeseries
from gateway.dashboard.session import (
    Sessions,
    SignInAttempts,
    SignInRequired,
    tokens_match,
)
from gateway.protocol.errors import BadRequest, NotFound
from gateway.webhooks.store import STATUSES

STATIC = Path(__file__).parent / "static"
LOG_PAGE = 200

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


def register(app: Flask, settings: Settings, context: ApiContext) -> None:
    """Serve the dashboard if the settings say so; start this process's chart sampler."""
    dash = settings.dashboard
    if not dash.active:
        return
    assert dash.admin_token is not None
    app.extensions["clarion.dashboard"] = Sessions(dash.admin_token, settings.api.tls)
    metrics = context.metrics

    def accepted() -> dict[str, float]:
        # The counter alone: the registry's collectors would read Redis (push counters).
        return {s.labels["app_id"]: s.value for m in metrics.events_accepted.collect()
                for s in m.samples if s.name.endswith("_total")}

    timeseries.ApiSampler(context.redis, settings.redis.key_prefix, dash.chart_minutes,
                          accepted).ensure_started()
    app.register_blueprint(bp)


def _sessions() -> Sessions:
    return current_app.extensions["clarion.dashboard"]  # type: ignore[no-any-return]


def _app(app_id: str) -> AppSettings:
    """The app, for a signed-in request."""
    _sessions().current(request)
    c = ctx()
    app = c.apps.find(app_id) if c.apps is not None else c.settings.app_by_id(app_id)
    if app is None:
        raise NotFound(f"No app {app_id}")
    return app


def _action_app(app_id: str) -> AppSettings:
    _sessions().check_action(request)
    return _app(app_id)


def _all_apps() -> list[AppSettings]:
    c = ctx()
    return c.apps.view().all() if c.apps is not None else list(c.settings.apps)


# --------------------------------------------------------------------------- page


@bp.get("")
@bp.get("/")
def page() -> Response:
    response = send_from_directory(STATIC, "index.html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/static/<path:name>")
def static_file(name: str) -> Response:
    return send_from_directory(STATIC, name)


# --------------------------------------------------------------------------- session


@bp.post("/api/signin")
def sign_in() -> Response:
    body = parse_json(request.get_data(cache=True))
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise BadRequest("Give the admin token: {\"token\": \"...\"}")
    c = ctx()
    attempts = SignInAttempts(c.redis, c.settings.redis.key_prefix)
    address = request.remote_addr or "unknown"
    attempts.check(address)
    sessions = _sessions()
    if not tokens_match(token, sessions.admin_token):
        attempts.failed(address)
        raise SignInRequired("Wrong admin token")
    csrf, cookie = sessions.new_session()
    response = jsonify(signed_in=True, csrf=csrf)
    sessions.set_cookie(response, cookie)
    return response


@bp.get("/api/session")
def session_info() -> Response:
    session = _sessions().current(request)
    return jsonify(signed_in=True, csrf=session["csrf"])


@bp.post("/api/signout")
def sign_out() -> Response:
    sessions = _sessions()
    sessions.check_action(request)
    response = jsonify(signed_in=False)
    sessions.sign_out(response)
    return response


# --------------------------------------------------------------------------- apps


@bp.get("/api/apps")
def apps() -> Response:
    _sessions().current(request)
    c = ctx()
    return jsonify(apps=[overview.app_summary(c, a) for a in _all_apps()])


@bp.get("/api/apps/<app_id>")
def app_detail(app_id: str) -> Response:
    return jsonify(overview.app_detail(ctx(), _app(app_id)))


@bp.post("/api/apps/<app_id>/secret")
def reveal_secret(app_id: str) -> Response:
    app = _action_app(app_id)
    return jsonify(secret=app.secret)


@bp.get("/api/apps/<app_id>/chart")
def chart(app_id: str) -> Response:
    app = _app(app_id)
    c = ctx()
    minutes = c.settings.dashboard.chart_minutes
    return jsonify(minutes=timeseries.series(c.redis, c.settings.redis.key_prefix, app.id,
                                             minutes))


# --------------------------------------------------------------------------- debug console


@bp.get("/api/apps/<app_id>/log")
def debug_log(app_id: str) -> Response:
    """Entries after ``after`` (an entry id), newest first; each poll keeps the app watched."""
    app = _app(app_id)
    c = ctx()
    after = request.args.get("after") or None
    if after is not None and not _is_entry_id(after):
        raise BadRequest("after must be a debug log entry id (like 1700000000000-0)")
    prefix, dash = c.settings.redis.key_prefix, c.settings.dashboard
    debuglog.watch(c.redis, prefix, app.id, dash.watch_ttl)
    entries = debuglog.read(c.redis, prefix, app.id, after, LOG_PAGE)
    return jsonify(entries=entries, watch_ttl=dash.watch_ttl)


def _is_entry_id(text: str) -> bool:
    ms, dash, seq = text.partition("-")
    return ms.isdigit() and (not dash or seq.isdigit())


@bp.post("/api/apps/<app_id>/events")
def send_event(app_id: str) -> Response:
    """The event creator: one event to one channel, accepted like a REST publish."""
    from gateway.api import channels

    app = _action_app(app_id)
    body = parse_json(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object")
    if not isinstance(body.get("data"), str):
        raise BadRequest("data must be a string (JSON text, as the REST API takes it)")
    item = {k: body[k] for k in ("name", "channel", "data") if k in body}
    publish = channels.publish_one(ctx(), app, item, via="dashboard")
    return jsonify(sent=True, channel=publish.channels[0], name=publish.event)


# --------------------------------------------------------------------------- channels


@bp.get("/api/apps/<app_id>/channels")
def channel_list(app_id: str) -> Response:
    return jsonify(channels=overview.channel_list(ctx(), _app(app_id)))


@bp.get("/api/apps/<app_id>/channels/<path:channel>")
def channel_detail(app_id: str, channel: str) -> Response:
    from gateway.api.channels import check_channel

    app = _app(app_id)
    return jsonify(overview.channel_detail(ctx(), app, check_channel(channel)))


# --------------------------------------------------------------------------- webhooks, push


@bp.get("/api/apps/<app_id>/webhooks")
def webhook_deliveries(app_id: str) -> Response:
    app = _app(app_id)
    status = request.args.get("status", "failed")
    if status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    return jsonify(overview.webhooks(ctx(), app, status, 100))


@bp.get("/api/apps/<app_id>/webhooks/<delivery_id>")
def webhook_delivery(app_id: str, delivery_id: str) -> Response:
    app = _app(app_id)
    d = overview.webhook_store(ctx()).load(delivery_id)
    if d is None or d.app_id != app.id:
        raise NotFound(f"No delivery {delivery_id}")
    return jsonify(d.detail())


@bp.post("/api/apps/<app_id>/webhooks/<delivery_id>/replay")
def webhook_replay(app_id: str, delivery_id: str) -> Response:
    app = _action_app(app_id)
    outcome = overview.webhook_store(ctx()).replay(app.id, delivery_id)
    if outcome == "missing":
        raise NotFound(f"No delivery {delivery_id}")
    return jsonify(id=delivery_id, result=outcome)


@bp.post("/api/apps/<app_id>/webhooks/replay")
def webhook_replay_all(app_id: str) -> Response:
    """Every dead (or failed) delivery of the app, as ``clarion webhooks replay --all``."""
    app = _action_app(app_id)
    body = parse_json(request.get_data(cache=True), empty={})
    status = body.get("status") if isinstance(body, dict) else None
    if status not in ("dead", "failed"):
        raise BadRequest("status must be dead or failed")
    ids = overview.webhook_store(ctx()).replay_many(app.id, status)
    return jsonify(replayed=len(ids), ids=ids)


@bp.get("/api/apps/<app_id>/push")
def push(app_id: str) -> Response:
    return jsonify(overview.push(ctx(), _app(app_id)))
