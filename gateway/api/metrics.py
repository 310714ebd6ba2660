"""``GET /metrics``: Prometheus text format from a registry owned by one Flask app.

Each ``create_app`` gets its own ``CollectorRegistry`` (never the global one), so tests can
build many apps in one process. Gap: under gunicorn every worker process has its own registry
and a scrape reaches one of them; aggregating needs prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``), not wired up yet.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest

bp = Blueprint("metrics", __name__)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "clarion_api_requests",
            "HTTP requests answered by the API, by endpoint and status.",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clarion_api_request_duration_seconds",
            "Time to answer an API request.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.events_accepted = Counter(
            "clarion_api_events_accepted",
            "Events accepted (given a serial and enqueued for delivery), by app.",
            ["app_id"],
            registry=self.registry,
        )
        self.tasks_enqueued = Counter(
            "clarion_api_tasks_enqueued",
            "Celery tasks enqueued by the API, by task name.",
            ["task"],
            registry=self.registry,
        )

    def install(self, app: Flask) -> None:
        app.before_request(_start_timer)
        app.after_request(self._record)

    def _record(self, response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        self.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        started = g.get("clarion_started")
        if started is not None:
            self.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response


def _start_timer() -> None:
    g.clarion_started = time.perf_counter()


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["clarion"].metrics.registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
