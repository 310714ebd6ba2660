"""``GET /metrics``: Prometheus text format from a registry owned by one Flask app.

Each ``create_app`` gets its own ``CollectorRegistry`` (never the global one), so tests can
build many apps in one process. Gap: under gunicorn every worker process has its own registry
and a scrape reaches one of them; aggregating needs prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``), not wired up yet.

Push outcomes are counted by the workers, which cannot be scraped: they add to cumulative
per-app counters in Redis (``P bps:{app}``, gateway/state/publishes.py) and
:class:`PushCollector` reads them at scrape time, so any API process gives the cluster-wide
figures (unlike the per-process counters above):

- ``clarion_push_notifications_total{app_id, platform, outcome}``: outcome ``delivered``,
  ``failed``, ``retried`` (an attempt rescheduled), ``removed`` (the provider said the
  token is dead and the device was deleted) or ``unknown`` (in doubt: its worker died
  mid-send, not sent again);
- ``clarion_push_publishes_total{app_id}``: publishes accepted;
- ``clarion_push_stats_up``: 1 if Redis answered this scrape, else 0 (and the two above are
  left out rather than reported as zero).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.state.publishes import OUTCOME_COUNTERS, PublishStore

log = logging.getLogger("clarion.api.metrics")

bp = Blueprint("metrics", __name__)


class PushCollector:
    """Push counters read from Redis at scrape time (one pipelined round trip for all apps).
    ``app_ids()`` lists the apps at each scrape: those ``clarion apps`` added are included."""

    def __init__(self, store: PublishStore, app_ids: Callable[[], list[str]]) -> None:
        self.store = store
        self.app_ids = app_ids

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "clarion_push_notifications",
                "Push notification outcomes recorded by the workers, by app, platform and outcome "
                "(retried: an attempt rescheduled; removed: dead token, device deleted; "
                "unknown: worker died mid-send, not sent again).",
                labels=["app_id", "platform", "outcome"],
            ),
            CounterMetricFamily(
                "clarion_push_publishes",
                "Beams publishes accepted, by app.",
                labels=["app_id"],
            ),
            GaugeMetricFamily(
                "clarion_push_stats_up",
                "1 if the push counters could be read from Redis at this scrape, else 0.",
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # Given so that registering never calls collect() (which would need Redis at start-up).
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        notifications, publishes, up = self._families()
        try:
            app_ids = self.app_ids()
            totals = self.store.totals(app_ids)
        except redis.exceptions.RedisError as exc:
            log.warning("push counters unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        for app_id in app_ids:
            counts = totals.get(app_id, {})
            publishes.add_metric([app_id], counts.get("publishes", 0))
            for field, value in sorted(counts.items()):
                platform, _, outcome = field.partition(":")
                if outcome in OUTCOME_COUNTERS:
                    notifications.add_metric([app_id, platform, outcome], value)
        up.add_metric([], 1)
        yield notifications
        yield publishes
        yield up


class ApiMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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
        self.idempotent_repeats = Counter(
            "clarion_api_idempotent_repeats",
            "Publishes whose idempotency key was used within its window, by app and outcome "
            "(replayed: answered like the first, nothing accepted; conflict: a different "
            "request, refused with 422).",
            ["app_id", "outcome"],
            registry=self.registry,
        )
        self.tasks_enqueued = Counter(
            "clarion_api_tasks_enqueued",
            "Celery tasks enqueued by the API, by task name.",
            ["task"],
            registry=self.registry,
        )
        self.enqueue_failures = Counter(
            "clarion_api_enqueue_failures",
            "Tasks the broker did not take although their events were accepted (the nodes "
            "deliver those from the channels' logs), by task name.",
            ["task"],
            registry=self.registry,
        )

    def add_push_collector(self, store: PublishStore, app_ids: Callable[[], list[str]]) -> None:
        self.registry.register(PushCollector(store, app_ids))

    def install(self, app: Flask) -> None:
        app.before_request(_start_timer)
        app.after_request(self._record)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client validates and locks on
        every ``labels`` call, a few microseconds each on the publish path. The label values
        are bounded (routes, methods, statuses, app ids)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def _record(self, response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        self.child(self.requests, request.method, endpoint, str(response.status_code)).inc()
        started = g.get("clarion_started")
        if started is not None:
            self.child(self.latency, endpoint).observe(time.perf_counter() - started)
        return response


def _start_timer() -> None:
    g.clarion_started = time.perf_counter()


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["clarion"].metrics.registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
