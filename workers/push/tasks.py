"""``clarion.push.publish``: deliver one Beams publish (see delivery.py for the algorithm).

Args ``(app_id, publish_id, step, part)``; the API enqueues step 0 of part 0 after storing the
publish, each run enqueues its part's next step until the part is done, and the first run of
a publish split into parts enqueues step 0 of the others. Registered by ``create_celery``
through ``TASK_MODULES`` (``register(celery_app)``).
"""

from __future__ import annotations

from celery import Celery, Task

from gateway.state.publishes import PublishStore
from workers.celery_app import clarion_task, context
from workers.push.delivery import run_publish

TASK_NAME = "clarion.push.publish"
QUEUE = "push"


def register(app: Celery) -> Task:
    @clarion_task(app, TASK_NAME, QUEUE, max_retries=20)
    def publish(self: Task, app_id: str, publish_id: str, step: int = 0, part: int = 0) -> str:
        ctx = context(self.app)

        def enqueue(next_step: int, countdown: float) -> None:
            self.apply_async(
                (app_id, publish_id, next_step, part), countdown=countdown or None, queue=QUEUE
            )

        def start_part(other: int) -> None:
            self.apply_async((app_id, publish_id, 0, other), queue=QUEUE)

        result = run_publish(ctx.settings, ctx.redis, app_id, publish_id, step, enqueue,
                             apps=ctx.apps, send_task=self.app.send_task, part=part,
                             start_part=start_part)
        log = ctx.debuglog
        if log is not None and (step == part == 0 or result == "done") and log.watching(app_id):
            store = PublishStore(ctx.redis, ctx.settings.redis.key_prefix,
                                 ctx.settings.push.status_ttl)
            log.write([(app_id, "push_publish",
                        {"step": step, "run": result, **(store.status(app_id, publish_id) or {})})])
        return result

    return publish
