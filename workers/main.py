"""``clarion worker``: a Celery worker (prefork pool by default) in the foreground."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from celery.signals import celeryd_after_setup

from config.settings import Settings
from workers.celery_app import QUEUES, create_celery

POOLS = ("prefork", "threads", "solo")


def worker_argv(
    settings: Settings, queues: Sequence[str] = QUEUES, concurrency: int | None = None,
    pool: str = "prefork",
) -> list[str]:
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise ValueError(f"unknown queue(s) {unknown}; choose from {', '.join(QUEUES)}")
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency or settings.worker.concurrency}",
        f"--queues={','.join(queues)}",
        # Unique per process, so several workers on one host never share a pidbox/mailbox.
        f"--hostname=clarion-{os.getpid()}@{socket.gethostname()}",
        f"--loglevel={settings.log_level.upper()}",
        # No gossip/mingle: nothing here uses them, and they cost start-up time and traffic.
        "--without-gossip",
        "--without-mingle",
    ]


def run_worker(
    settings: Settings,
    queues: Sequence[str] = QUEUES,
    concurrency: int | None = None,
    pool: str = "prefork",
) -> int:
    """Run a worker consuming ``queues`` until it is stopped (SIGTERM: warm shutdown); its
    exit code: 0 after a requested shutdown, non-zero after an unrecoverable error, so that a
    supervisor (`clarion up`, systemd, Kubernetes) restarts it."""
    app = create_celery(settings)
    started: list[Any] = []

    def keep(sender: Any = None, instance: Any = None, **_: Any) -> None:
        started.append(instance)

    # ``worker_main`` drops the worker's exit code; the worker itself keeps it.
    celeryd_after_setup.connect(keep, weak=False)
    try:
        app.worker_main(worker_argv(settings, queues, concurrency, pool))
    finally:
        celeryd_after_setup.disconnect(keep)
    if not started:
        return 1  # it never got as far as starting
    return int(started[0].exitcode or 0)
