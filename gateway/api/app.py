"""The Flask application factory: Pusher REST API, health and metrics.

Everything a request needs lives in ``app.extensions["clarion"]`` (:class:`ApiContext`): the
settings, one synchronous Redis client (hiredis parser when installed, which it is as a
dependency), the key schema, History, and a Celery app used only to ``send_task``.

Every refusal is JSON ``{"error": message, "code": status}``: ApiError subclasses carry their
status, unknown routes are 404, wrong methods 405, bodies over ``api.max_body_bytes`` 413,
Redis (or the task broker) unreachable 503 and anything unexpected 500 (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from flask import Flask, Response, current_app, jsonify
from kombu.exceptions import OperationalError as KombuOperationalError
from werkzeug.exceptions import HTTPException

from config.settings import Settings
from gateway.api.deliver_message import TASK as LIVE_TASK
from gateway.api.deliver_message import DeliverMessage
from gateway.api.live_sender import LiveSender
from gateway.api.metrics import ApiMetrics
from gateway.dashboard.debuglog import DebugLog
from gateway.protocol.errors import ApiError
from gateway.state.apps import AppResolver
from gateway.state.chain_heads import ChainHeads
from gateway.state.history import History
from gateway.state.idempotency import IdempotencyRecords
from gateway.state.keys import Keys
from gateway.state.publishes import PublishStore
from gateway.state.redis_client import TRANSIENT_ERRORS, failover_watch, sync_client
from workers.celery_app import create_celery

log = logging.getLogger("clarion.api")

_UNAVAILABLE = (*TRANSIENT_ERRORS, KombuOperationalError)


@dataclass(slots=True)
class ApiContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    history: History
    celery: Celery
    metrics: ApiMetrics
    # Responses of publishes with an idempotency key (gateway/api/idempotency.py).
    idempotency: IdempotencyRecords
    # The live delivery task's message, enqueued by the accept script (gateway/api/channels.py).
    deliver: DeliverMessage
    # Sends that task when the script cannot (a broker other than the state Redis).
    live_sender: LiveSender
    # Config apps overlaid by the Redis app store (gateway/state/apps.py); auth.py looks apps
    # up through it.
    apps: AppResolver | None = None
    # Each app's debug log, written only while a dashboard console watches (gateway/dashboard).
    debuglog: DebugLog | None = None

    def close(self) -> None:
        self.redis.close()
        self.celery.close()


def ctx() -> ApiContext:
    """The ApiContext of the app handling the current request."""
    return current_app.extensions["clarion"]  # type: ignore[no-any-return]


def create_app(settings: Settings) -> Flask:
    app = Flask("clarion.api")
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]

    client = sync_client(
        settings.redis, "the API",
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    keys = Keys.of(settings.redis)
    history = History(client, keys, settings.history.max_events, settings.history.retention)
    if settings.redis.sentinels or settings.redis.cluster:
        # A failover must not hide the events the old master took with it: on Sentinel the
        # heads are put back at the switch, on Cluster they go into every accept.
        history.heads = ChainHeads()
    if settings.redis.sentinels:
        failover_watch(settings.redis).before_resume(history.heads.restore)
    apps = AppResolver(settings, client, keys)
    metrics = ApiMetrics()
    metrics.add_push_collector(
        PublishStore(client, settings.redis.key_prefix, settings.push.status_ttl),
        lambda: [a.id for a in apps.view().all()],
    )
    celery = create_celery(settings)
    app.extensions["clarion"] = ApiContext(
        settings=settings,
        redis=client,
        keys=keys,
        history=history,
        celery=celery,
        metrics=metrics,
        apps=apps,
        deliver=DeliverMessage(settings.redis.key_prefix, settings.broker_is_state_redis),
        live_sender=LiveSender(celery, metrics.child(metrics.enqueue_failures, LIVE_TASK)),
        idempotency=IdempotencyRecords(client, keys),
        debuglog=DebugLog(client, settings.redis.key_prefix,
                          settings.dashboard.log_max_entries, "api")
        if settings.dashboard.active else None,
    )

    from gateway.api import beams, channels, health, history
    from gateway.api import metrics as metrics_bp
    from gateway.dashboard import views as dashboard
    from gateway.webhooks import api as webhooks_api

    app.register_blueprint(channels.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp.bp)
    app.register_blueprint(webhooks_api.bp)
    beams.register(app, settings)
    dashboard.register(app, settings, app.extensions["clarion"])
    metrics.install(app)
    _install_error_handlers(app)
    return app


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message, code=status)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "Not found",
            405: "Method not allowed",
            413: "Request body too large: the limit is "
            f"{app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        response = error_response(status, messages.get(status, exc.description or exc.name))
        valid = getattr(exc, "valid_methods", None)
        if status == 405 and valid:
            response.headers["Allow"] = ", ".join(sorted(valid))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, _UNAVAILABLE):
            what = "the task broker" if isinstance(exc, KombuOperationalError) else "Redis"
            log.warning("%s unavailable: %s", what, exc)
            return error_response(
                503, f"Service unavailable: {what} cannot be reached", {"Retry-After": "1"}
            )
        log.exception("unhandled error in the API")
        return error_response(500, "A server error has occurred.")
