"""``clarion.live.deliver``: publish accepted events to the bus for the WebSocket nodes.

Args: ``(app_id, [[channel, event, data, exclude_socket_id, serial], ...])`` as the API
enqueues them (docs/contracts.md). Every event is published once, all in one pipeline.

Idempotent by serial: a redelivered task (worker lost, visibility timeout) publishes the same
events with the same serials, and nodes drop any ``serial <= last delivered`` for the
channel, so a subscriber never sees an event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery, Task

from gateway.state.bus import BusEvent
from workers.celery_app import context

TASK_NAME = "clarion.live.deliver"


def publish_events(client: Any, bus_key: str, app_id: str, events: Sequence[Sequence[Any]]) -> int:
    """Publish every event once on ``bus_key`` with one pipeline; return how many."""
    pipe = client.pipeline(transaction=False)
    for channel, event, data, exclude, serial in events:
        pipe.publish(
            bus_key,
            BusEvent(app_id, channel, event, data, int(serial), exclude or None).encode(),
        )
    pipe.execute()
    return len(events)


def register(app: Celery) -> Task:
    @app.task(
        name=TASK_NAME,
        bind=True,
        queue="live",
        acks_late=True,
        reject_on_worker_lost=True,
        # Redis unreachable: retry with a short backoff rather than acknowledge and lose.
        autoretry_for=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
        retry_backoff=1,
        retry_backoff_max=30,
        retry_jitter=True,
        max_retries=10,
    )
    def deliver(self: Task, app_id: str, events: list[list[Any]]) -> int:
        ctx = context(self.app)
        return publish_events(ctx.redis, ctx.keys.bus, app_id, events)

    return deliver
