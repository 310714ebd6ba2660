"""``clarion.webhooks.deliver(delivery_id)`` and the leader thread of webhooks workers.

Registered by ``create_celery`` through ``TASK_MODULES``. A worker that consumes the
``webhooks`` queue (seen at ``worker_init``, after ``-Q`` was applied) starts one
:class:`~workers.webhooks.leader.Leader` thread in each pool process
(``worker_process_init``: after the fork, so no thread is ever forked), or, with a pool that
has no processes of its own (threads), one in the worker's process once it is ready; one of
them, cluster wide, holds the lead at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task, signals

from gateway.state.apps import AppResolver
from workers.celery_app import clarion_task, context
from workers.webhooks.delivery import Deliverer
from workers.webhooks.leader import Leader

TASK_NAME = "clarion.webhooks.deliver"
QUEUE = "webhooks"

log = logging.getLogger("clarion.webhooks")

# The app of this worker process, when it consumes the webhooks queue.
_worker: dict[str, Any] = {"app": None, "leader": None, "deliverer": None}


def app_resolver(app: Celery) -> AppResolver:
    """Config apps overlaid by the Redis app store (``clarion apps``), re-read each second."""
    return context(app).apps


def deliverer(app: Celery) -> Deliverer:
    ctx = context(app)
    d = _worker.get("deliverer")
    if d is None or d.redis is not ctx.redis:
        d = Deliverer(ctx.settings, ctx.redis, ctx.keys, apps=app_resolver(app),
                      debuglog=ctx.debuglog)
        _worker["deliverer"] = d
    return d


def register(app: Celery) -> Task:
    # Redis unreachable: retry shortly; the lease in P wh:retry is the backstop.
    @clarion_task(app, TASK_NAME, QUEUE, max_retries=10)
    def deliver(self: Task, delivery_id: str) -> str:
        return deliverer(self.app).attempt(delivery_id)

    return deliver


def start_leader(app: Celery) -> Leader:
    ctx = context(app)

    def enqueue(delivery_id: str) -> None:
        app.send_task(TASK_NAME, args=(delivery_id,), queue=QUEUE)

    leader = Leader(ctx.settings, ctx.redis, ctx.keys, enqueue, apps=app_resolver(app)).start()
    _worker["leader"] = leader
    return leader


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "clarion") or TASK_NAME not in app.tasks:
        return
    consume = app.amqp.queues.consume_from
    queues = set(consume) if consume else set(app.amqp.queues)
    if QUEUE in queues:
        _worker["app"] = app


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    app = _worker.get("app")
    if app is not None and _worker.get("leader") is None:
        start_leader(app)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # The threads pool never sends worker_process_init; prefork's children each start theirs.
    from celery.concurrency.prefork import TaskPool as PreforkPool

    app = _worker.get("app")
    pool = getattr(sender, "pool", None)
    if app is not None and _worker.get("leader") is None and not isinstance(pool, PreforkPool):
        start_leader(app)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    leader = _worker.get("leader")
    if leader is not None:
        leader.stop(timeout=2.0)
        _worker["leader"] = None
