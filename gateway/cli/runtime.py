"""What a running `clarion up` tells the operator commands, and how it keeps a second one out.

``clarion up`` takes a lock on ``<data_dir>/up.lock`` (``flock``: the kernel drops it when the
process dies, so a crash leaves no stale lock) and, once its children answer, writes
``<data_dir>/runtime.json``: the Redis URL (the embedded Redis's port is random when 6379 is
busy), the addresses it serves, the demo app's id, its settings and the process ids. ``clarion
apps``, ``webhooks`` and ``push`` read it, so they work without flags from the directory (or
with the ``data_dir``) ``clarion up`` was started with. It holds app secrets, so it is
readable by its owner only. The file is removed on a clean stop; one left by a killed instance
is ignored because its lock is free.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

RUNTIME_FILE = "runtime.json"
LOCK_FILE = "up.lock"


@dataclass(frozen=True)
class Runtime:
    pid: int
    redis_url: str
    embedded_redis: bool
    api_url: str
    ws_url: str
    # The demo app `clarion up` made because the config has none (None: config apps).
    demo_app_id: str | None = None
    children: dict[str, int] = field(default_factory=dict)
    # The settings its children run with (its config file's apps, the Redis URL, the key
    # prefix): operator commands act on them, whatever config they were given themselves.
    settings: dict[str, Any] = field(default_factory=dict)

    def save(self, data_dir: Path) -> None:
        path = data_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.chmod(tmp, 0o600)  # app secrets
        tmp.replace(path)


class AlreadyRunning(Exception):
    """Another `clarion up` holds the data dir's lock."""


class InstanceLock:
    """An exclusive lock on a data dir, held for the life of one `clarion up`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(holder) from None
            raise
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _locked(data_dir: Path) -> bool:
    """Whether some process holds the data dir's lock (probed without keeping it)."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def read_runtime(data_dir: Path) -> Runtime | None:
    """The running instance's runtime, or None when none runs with this data dir."""
    path = data_dir / RUNTIME_FILE
    if not path.exists() or not _locked(data_dir):
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Runtime(**data)
    except (ValueError, TypeError):
        return None


def starting(data_dir: Path) -> bool:
    """A `clarion up` holds the data dir but has not written its runtime yet."""
    return not (data_dir / RUNTIME_FILE).exists() and _locked(data_dir)


def remove_runtime(data_dir: Path) -> None:
    (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


def port_in_use(host: str, port: int) -> bool:
    """Whether ``port`` is taken on ``host``. Bound without SO_REUSEPORT on purpose: a server
    that set it (granian, `clarion ws --processes N`) would otherwise share its port with us."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR matches what servers set, so a port in TIME_WAIT is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def foreign_listeners(ports: Iterable[int], ours: set[int]) -> dict[int, list[int]]:
    """Processes outside ``ours`` listening on each of ``ports``: after its children answered,
    a `clarion up` started at the same moment as another could still share a port with it
    through SO_REUSEPORT (the check before starting cannot close that race). One scan of the
    machine's sockets for all ports: on a host holding many connections a scan costs seconds."""
    import psutil

    wanted = set(ports)
    found: dict[int, set[int]] = {port: set() for port in wanted}
    try:
        sockets = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # pragma: no cover - some systems hide other sockets
        return {port: [] for port in wanted}
    for c in sockets:
        if (c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in wanted
                and c.pid is not None and c.pid not in ours):
            found[c.laddr.port].add(c.pid)
    return {port: sorted(pids) for port, pids in found.items()}
