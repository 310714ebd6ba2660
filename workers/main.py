"""``clarion worker``: a Celery worker (prefork pool by default) in the foreground."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from typing import Any

from celery.exceptions import SecurityWarning
from celery.signals import celeryd_after_setup, setup_logging

from config.settings import Settings
from gateway.logs import configure as configure_logs
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
    _one_log_format(settings)
    started: list[Any] = []

    def keep(sender: Any = None, instance: Any = None, **_: Any) -> None:
        started.append(instance)

    # ``worker_main`` drops the worker's exit code; the worker itself keeps it.
    celeryd_after_setup.connect(keep, weak=False)
    try:
        # --quiet: no banner; `clarion up` prints what a user needs, and the logs say the rest.
        app.worker_main(["--quiet", *worker_argv(settings, queues, concurrency, pool)])
    finally:
        celeryd_after_setup.disconnect(keep)
    if not started:
        return 1  # it never got as far as starting
    return int(started[0].exitcode or 0)


def _one_log_format(settings: Settings) -> None:
    """Celery's records in the format of every other component (gateway/logs.py)."""
    configure_logs(settings.log_level, settings.log_format)
    # Celery sets up logging itself unless something answers setup_logging: ours is done.
    setup_logging.connect(_logging_configured, weak=False)
    # Celery warns a root user about unpickling messages; workers accept JSON only
    # (create_celery), so the warning names a risk that is not there.
    warnings.filterwarnings("ignore", category=SecurityWarning)


def _logging_configured(**_: Any) -> None:
    """Nothing to do: configured by _one_log_format before the worker started."""
