"""The worker processes `clarion up` and the test cluster start: one `clarion worker` per
``worker.groups`` entry, with its queues, concurrency and pool (config/settings.py)."""

from __future__ import annotations

from config.settings import Settings


def worker_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    """``(name, clarion arguments)`` of each worker process, in the groups' order."""
    worker = settings.worker
    return [
        (
            f"worker[{','.join(group.queues)}]",
            ["worker", "--queues", ",".join(group.queues),
             "--concurrency", str(worker.concurrency_of(group)),
             "--pool", worker.pool_of(group)],
        )
        for group in worker.groups
    ]
