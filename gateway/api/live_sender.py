"""Queueing a request's ``clarion.live.deliver`` task with Celery's own producer.

When the broker is not the state Redis (``broker.url``: another Redis, or RabbitMQ), the
accept script cannot write the task message: it still decides, atomically with the accept,
whether the request needs a task of its own (it took the ``lv:armed`` key) or rides on one
already queued (gateway/state/riders.py). Only in the first case does the API then send the
task, after the script, through the Celery app's shared producer pool.

A send that fails (the broker down or refusing), or an API process that dies between the
script and the send, loses a doorbell, never an event: the events are in their channels' logs,
and the nodes deliver them from there within about two ``websocket.reconcile_interval``. The
armed key the script took is a lease (``ARMED_MS``): until it expires, later requests ride on
the pending list instead of each trying the broker again, and the first request after it
queues a task that drains what rode meanwhile. So the API answers 200 for events it accepted
whether or not their task could be queued; the failure is logged and counted
(``clarion_api_enqueue_failures_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from gateway.api.deliver_message import QUEUE, TASK

log = logging.getLogger("clarion.api")


class LiveSender:
    """Sends ``clarion.live.deliver`` for a request that took the armed key."""

    def __init__(self, celery: Any, failures: Any) -> None:
        self.celery = celery
        self.failures = failures  # a counter (``.inc()``)

    def send(
        self, app_id: str, events: Sequence[tuple[str, str, Any, str | None]],
        links: Sequence[tuple[int, int]],
    ) -> bool:
        """Queue the task for ``events`` with their (serial, prev) ``links``; False if the
        broker did not take it (the lease and the nodes' reconcile cover it)."""
        payload = [[channel, event, data, exclude, serial, prev]
                   for (channel, event, data, exclude), (serial, prev)
                   in zip(events, links, strict=True)]
        try:
            self.celery.send_task(TASK, args=(app_id, payload), queue=QUEUE)
        except Exception as exc:  # noqa: BLE001 - any failure of the broker: covered, see above
            self.failures.inc()
            log.warning("live task not queued (%s: %s); the nodes deliver the events from "
                        "the channels' logs", type(exc).__name__, exc)
            return False
        return True
