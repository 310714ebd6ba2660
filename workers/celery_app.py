"""The Celery application factory: one Celery app per settings object, no import-time globals.

Reliability choices (reference: reliability-webhooks-celery.md, section 2):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after it
  returns, and a pool child that dies mid-task (SIGKILL, OOM) puts its message back at the
  head of the queue instead of acknowledging it. Every task is idempotent for that reason.
- ``worker_prefetch_multiplier = 1``: a worker holds at most ``concurrency`` unacknowledged
  messages, so a worker that dies strands few of them.
- The Redis transport emulates acks with the ``unacked`` hash. A worker whose *main* process
  dies leaves its messages there until ``visibility_timeout`` has passed and a live worker's
  sweep (every ``unacked_restore_interval`` seconds, ``unacked_restore_throttle = 1`` so the
  interval is the real period) restores them.
- ``global_keyprefix`` = ``settings.redis.key_prefix``: every broker key (queues ``P live``,
  ``P push``, ``P webhooks``, ``P unacked``, ``P unacked_index``, ``P _kombu.binding.*``) lives
  under the deployment's prefix, so several deployments or test runs share one Redis.
- The broker is ``broker.url``, else the state Redis (``redis.url``). With RabbitMQ
  (``amqp://``) the queues are durable and messages persistent, publishes wait for the
  broker's confirm, and a dead worker's unacknowledged messages come back when its connection
  closes (no visibility timeout); the Redis options above apply to a Redis broker only.

The settings reach tasks through ``app.clarion`` (a :class:`WorkerContext`), which builds its
Redis client lazily per process: a client made before the prefork pool forks is never reused
in a child.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from kombu import Exchange, Queue

from config.settings import Settings
from gateway.dashboard.debuglog import DebugLog
from gateway.state.apps import AppResolver
from gateway.state.keys import Keys
from gateway.state.redis_client import (
    TRANSIENT_ERRORS,
    celery_broker,
    sync_bus_client,
    sync_client,
)
from workers.kombu_fixes import closed_channel_is_a_connection_error

QUEUES = ("live", "push", "webhooks")

# Modules defining tasks; each has ``register(celery_app)``.
TASK_MODULES = ("workers.tasks.live", "workers.push.tasks", "workers.webhooks.tasks")


class WorkerContext:
    """What tasks need from the deployment: settings, keys, a per-process Redis client and the
    apps (config overlaid by ``clarion apps``' Redis store)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings.redis)
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._bus: redis.Redis | None = None
        self._pid: int | None = None
        self._apps: AppResolver | None = None
        self._debuglog: DebugLog | None = None

    @property
    def redis(self) -> redis.Redis:
        pid = os.getpid()
        if self._redis is None or self._pid != pid:
            with self._lock:
                if self._redis is None or self._pid != pid:
                    self._redis = sync_client(
                        self.settings.redis, "the workers",
                        socket_connect_timeout=5,
                        socket_timeout=10,
                        health_check_interval=30,
                    )
                    self._bus = sync_bus_client(self.settings.redis, self._redis,
                                                socket_connect_timeout=5, socket_timeout=10)
                    self._pid = pid
        return self._redis

    @property
    def bus(self) -> redis.Redis:
        """The client bus messages are published with: ``redis`` itself, or on Redis Cluster
        a plain client on one of its nodes (gateway/state/redis_client.py)."""
        client = self.redis  # makes both, in this process
        return self._bus or client

    @property
    def debuglog(self) -> DebugLog | None:
        """The debug log of watched apps (gateway/dashboard), None when the dashboard is off."""
        dash = self.settings.dashboard
        if not dash.active:
            return None
        client = self.redis
        log = self._debuglog
        if log is None or log.client is not client:
            log = self._debuglog = DebugLog(client, self.settings.redis.key_prefix,
                                            dash.log_max_entries, "worker")
        return log

    @property
    def apps(self) -> AppResolver:
        """The apps as the store has them (re-read at most every second), so a rotated or
        disabled app, new push credentials or webhooks apply without restarting workers."""
        client = self.redis
        apps = self._apps
        if apps is None or apps.store.redis is not client:
            apps = self._apps = AppResolver(self.settings, client, self.keys)
        return apps

    def close(self) -> None:
        if self._redis is not None and self._pid == os.getpid():
            self._redis.close()
            if self._bus is not self._redis and self._bus is not None:
                self._bus.close()
        self._redis = self._bus = None


def broker_url(settings: Settings) -> str:
    """Where tasks are queued: ``broker.url``, else the state Redis (kombu's ``sentinel://``
    URL when the state Redis is found through Sentinel)."""
    state_redis, _ = celery_broker(settings.redis)  # needed whatever the broker: the logs
    return settings.broker.url or state_redis


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """The sentinel transport's options (master_name, sentinel_kwargs) when the broker is the
    state Redis found through Sentinel; else none."""
    return {} if settings.broker.url else celery_broker(settings.redis)[1]


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://"))


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's options for the broker's transport (Redis, Redis through Sentinel, RabbitMQ)."""
    if is_amqp(broker_url(settings)):
        return {
            # Each publish waits for RabbitMQ's ack: a task it could not take (full disk,
            # memory alarm, channel error) raises instead of vanishing (what a publish costs
            # the API: bench/results/broker.md).
            "confirm_publish": True,
            # A broker that stops answering must not hang a publish or its confirm (sockets
            # only: an idle worker's consumer is not affected).
            "read_timeout": 10,
            "write_timeout": 10,
        }
    worker = settings.worker
    return {
        "visibility_timeout": worker.visibility_timeout,
        "unacked_restore_interval": worker.restore_interval,
        "unacked_restore_throttle": 1,
        "global_keyprefix": settings.redis.key_prefix,
        "socket_connect_timeout": 5,
        # A broker that disappears without closing the TCP connection must not hang publishes.
        "socket_timeout": 10,
        "health_check_interval": 30,
        **_sentinel_options(settings),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": broker_url(settings),
        # kombu's sentinel transport, made to follow failovers (workers/sentinel_broker.py).
        **({"broker_transport": "workers.sentinel_broker:Transport"}
           if _sentinel_options(settings) else {}),
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(settings),
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_default_queue": "live",
        "task_routes": {
            "clarion.live.*": {"queue": "live"},
            "clarion.push.*": {"queue": "push"},
            "clarion.webhooks.*": {"queue": "webhooks"},
        },
        "task_create_missing_queues": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``, with Clarion's tasks registered."""
    closed_channel_is_a_connection_error()
    app = Celery("clarion", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.clarion = WorkerContext(settings)  # type: ignore[attr-defined]
    for name in TASK_MODULES:
        importlib.import_module(name).register(app)
    return app


def context(app: Celery) -> WorkerContext:
    return app.clarion  # type: ignore[attr-defined,no-any-return]


# Redis unreachable (or a cluster moving): a task retries with a short backoff rather than
# acknowledge and lose.
REDIS_ERRORS = TRANSIENT_ERRORS


def clarion_task(
    app: Celery, name: str, queue: str, *, max_retries: int, **options: Any
) -> Callable[[Callable[..., Any]], Task]:
    """``app.task`` with the options all Clarion tasks share: bound, acknowledged late and put
    back if the pool child dies, retried on :data:`REDIS_ERRORS` with a jittered backoff of
    1 s up to 30 s, at most ``max_retries`` times. ``options`` are passed on to ``app.task``."""
    return app.task(  # type: ignore[no-any-return]
        name=name,
        bind=True,
        queue=queue,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=REDIS_ERRORS,
        retry_backoff=1,
        retry_backoff_max=30,
        retry_jitter=True,
        max_retries=max_retries,
        **options,
    )
