"""A whole Clarion deployment made of real processes, for the compat and e2e suites.

``Cluster`` starts N WebSocket nodes (each on its own free port, so a test chooses which node a
client talks to), M sets of Celery worker processes and one API process against a real Redis,
with a key prefix of its own; it waits for ``/ready`` (nodes, API) and a Celery ping (workers),
and stops everything at the end (SIGTERM, then SIGKILL of each process group). Processes are
the ones `clarion up` starts (``python -m gateway.cli ws|api|worker``), through
gateway/processes.py; a set of workers is one process per ``worker.groups`` entry, as `clarion
up` starts them (by default one for ``live``, one for ``push,webhooks``), in that order in
``Cluster.workers``; ``add_worker`` starts the next one in that order (after whole sets: a
live worker).

Each process logs to ``<tmp>/logs/<name>.log``; ``Cluster.logs()`` returns the tails, which the
fixtures print when a test fails.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pusher

from config import Settings
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.processes import Child, ChildDied, wait_http_ready, wait_workers_ready
from workers.groups import worker_commands

APP_ID, APP_KEY, APP_SECRET = "1", "app-key", "app-secret"
TEST_CLUSTER_ENV = "CLARION_TEST_REDIS_CLUSTER"
# 32 bytes, base64: the master key the SDK derives encrypted-channel secrets from.
ENCRYPTION_MASTER_KEY_B64 = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="


def cluster_settings(
    redis_url: str,
    data_dir: Path,
    *,
    app: dict[str, Any] | None = None,
    **sections: Any,
) -> Settings:
    """Settings for one test deployment: a unique key prefix, free ports, app 1/app-key.
    With ``CLARION_TEST_REDIS_CLUSTER`` (a node of a Redis Cluster), the state is on that
    cluster and ``redis_url`` is the Celery broker (a suite run on Redis Cluster)."""
    redis: dict[str, Any] = {"url": redis_url, "key_prefix": f"e2e{uuid.uuid4().hex[:10]}:"}
    broker: dict[str, Any] = {}
    on_cluster = os.environ.get(TEST_CLUSTER_ENV)
    if on_cluster and "redis" not in sections:
        redis.update(url=on_cluster, cluster=True)
        broker = {"url": redis_url}
    base = Settings().with_overrides(
        redis=redis,
        broker=broker,
        websocket={"host": "127.0.0.1", "port": free_port(), "shutdown_grace": 0.2,
                   "heartbeat_interval": 1.0, "node_timeout": 5.0},
        api={"host": "127.0.0.1", "port": free_port(), "workers": 1, "threads": 8},
        worker={"concurrency": 1},
        apps=[{"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, **(app or {})}],
        data_dir=str(data_dir),
        log_level="warning",
    )
    return base.with_overrides(**sections) if sections else base


class Cluster:
    def __init__(
        self,
        redis_url: str,
        tmp_dir: Path,
        *,
        nodes: int = 1,
        workers: int = 1,
        app: dict[str, Any] | None = None,
        **sections: Any,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.settings = cluster_settings(redis_url, self.tmp_dir, app=app, **sections)
        self.node_ports = _distinct_ports(nodes, {self.settings.api.port})
        self.nodes: list[Child] = []
        self.workers: list[Child] = []
        self.api: Child | None = None
        # More API processes on ports of their own (add_api), sharing everything else.
        self.more_apis: list[Child] = []
        self._worker_count = workers
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_port(self) -> int:
        return self.settings.api.port

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.api, *self.more_apis, *self.nodes, *self.workers)
                if c is not None]

    def _log(self, name: str) -> Path:
        return self.tmp_dir / "logs" / f"{name}.log"

    def node_settings(self, i: int) -> Settings:
        return self.settings.with_overrides(websocket={"port": self.node_ports[i]})

    def start(self, timeout: float = 60.0) -> Cluster:
        self._started = True
        try:
            self.api = Child.cli("api", self.settings, "api", log_path=self._log("api")).start()
            for i, _ in enumerate(self.node_ports):
                self.nodes.append(
                    Child.cli(f"ws{i}", self.node_settings(i), "ws", "--processes", "1",
                              log_path=self._log(f"ws{i}")).start()
                )
            for i in range(self._worker_count * len(worker_commands(self.settings))):
                self.workers.append(self._worker(i).start())
            for i, node in enumerate(self.nodes):
                wait_http_ready(self.node_ready_url(i), node, timeout)
            wait_http_ready(f"{self.api_url}/ready", self.api, timeout)
            self.wait_workers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _worker(self, i: int) -> Child:
        """Worker process ``i``: each set is one process per ``worker.groups`` entry, in order."""
        commands = worker_commands(self.settings)
        _, args = commands[i % len(commands)]
        return Child.cli(f"worker{i}", self.settings, *args, log_path=self._log(f"worker{i}"))

    def add_api(self, timeout: float = 60.0) -> int:
        """Start one more API process (same Redis, key prefix and apps); its port."""
        port = free_port()
        name = f"api{len(self.more_apis) + 1}"
        child = Child.cli(name, self.settings.with_overrides(api={"port": port}), "api",
                          log_path=self._log(name)).start()
        self.more_apis.append(child)
        wait_http_ready(f"http://127.0.0.1:{port}/ready", child, timeout)
        return port

    def wait_workers(self, timeout: float = 60.0) -> None:
        alive = [w for w in self.workers if w.alive]
        if alive:
            wait_workers_ready(self.settings, alive, timeout)

    def stop(self) -> None:
        children = self.children
        for child in children:
            child.send(signal.SIGTERM)
        start = time.monotonic()
        deadline = start + 15
        for child in children:
            child.stop(max(0.1, deadline - time.monotonic()), signalled=True)
            took = time.monotonic() - start
            if took > 5:
                print(f"harness: {child.name} took {took:.1f}s to stop ({child.describe_exit()})")

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def assert_alive(self) -> None:
        for child in self.children:
            if not child.alive and child not in self.workers:
                raise ChildDied(child)

    def logs(self, chars: int = 4000) -> str:
        parts = []
        for child in self.children:
            tail = child.log_tail(chars)
            parts.append(f"===== {child.describe_exit()} =====\n{tail}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ addresses, clients

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def node_ready_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.node_ports[i]}/ready"

    def ws_url(self, node: int = 0, key: str = APP_KEY, query: str | None = None) -> str:
        q = query if query is not None else "protocol=7&client=js&version=8.4.0&flash=false"
        return f"ws://127.0.0.1:{self.node_ports[node]}/app/{key}?{q}"

    def pusher(self, **options: Any) -> pusher.Pusher:
        """The official server SDK, pointed at this cluster's API."""
        kwargs: dict[str, Any] = dict(
            app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1",
            port=self.api_port, ssl=False, timeout=10,
            encryption_master_key_base64=ENCRYPTION_MASTER_KEY_B64,
        )
        kwargs.update(options)
        return pusher.Pusher(**kwargs)

    def client(self, node: int = 0, **kwargs: Any):  # -> PusherClient
        from _harness.client import PusherClient

        return PusherClient.connect(self.ws_url(node), auth=self.pusher(), **kwargs)

    # ------------------------------------------------------------------ faults

    def restart_node(self, i: int, timeout: float = 60.0) -> NodeRestart:
        """SIGTERM node ``i``, watch its ``/ready`` while it drains, wait for it to exit, start
        it again on the same port and wait until it is ready (a rolling restart's step)."""
        node = self.nodes[i]
        node.send(signal.SIGTERM)
        signalled = time.monotonic()
        statuses: list[int | None] = []
        while node.alive and time.monotonic() - signalled < timeout:
            status = ready_status(self.node_ready_url(i))
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            time.sleep(0.05)
        code = node.stop(1.0, signalled=True)
        drained = time.monotonic() - signalled
        node.start()
        wait_http_ready(self.node_ready_url(i), node, timeout)
        return NodeRestart(code, drained, statuses)

    def kill_worker(self, i: int = 0, sig: int = signal.SIGKILL) -> int:
        """Signal worker ``i``'s main process (0: the first set's live worker); its pid."""
        pid = self.workers[i].pid
        self.workers[i].send(sig)
        return pid

    def worker_pool_children(self, i: int = 0) -> list[psutil.Process]:
        try:
            return psutil.Process(self.workers[i].pid).children()
        except psutil.NoSuchProcess:
            return []

    def kill_worker_child(self, i: int = 0) -> int:
        """SIGKILL one pool process of worker ``i``; its pid."""
        deadline = time.monotonic() + 10
        while not (kids := self.worker_pool_children(i)):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker{i} has no pool process to kill")
            time.sleep(0.1)
        kids[0].send_signal(signal.SIGKILL)
        return kids[0].pid

    def replace_worker(self, i: int) -> Child:
        """Start a new worker in place of worker ``i`` (which should be dead by now)."""
        self.workers[i] = self._worker(i).start()
        return self.workers[i]

    def add_worker(self) -> Child:
        child = self._worker(len(self.workers)).start()
        self.workers.append(child)
        return child


@dataclass
class NodeRestart:
    exit_code: int | None
    drain_seconds: float  # from SIGTERM to the process's exit
    # What /ready answered meanwhile, in order, repeats left out (None: no answer). It may
    # start with a 200 read before the node handled the signal.
    ready_statuses: list[int | None]


def _distinct_ports(n: int, taken: set[int]) -> list[int]:
    """``n`` free ports, none of them in ``taken``: free_port() may hand out a port twice
    while the first taker has not bound it yet (the kernel gives them out in sequence)."""
    out: list[int] = []
    while len(out) < n:
        port = free_port()
        if port not in taken:
            taken.add(port)
            out.append(port)
    return out


def ready_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - local URL
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def restart_redis(server: EmbeddedRedis, downtime: float = 1.0) -> None:
    """Stop Redis (SIGTERM: it flushes its append-only file), stay down ``downtime`` seconds,
    start it again on the same port and data directory."""
    server.stop()
    time.sleep(downtime)
    server.start()
