"""Redis Sentinel for the tests: one master, one replica and three sentinels on free ports, all
run by the same redis-server binary as the rest of the suite (``redis-server FILE --sentinel``),
with short detection and failover times so that a failover takes a few seconds.

``SentinelGroup.kill_master()`` SIGKILLs whichever server is master now; ``failover()`` asks a
sentinel for a graceful one (``SENTINEL FAILOVER``); ``wait_for_new_master(old)`` waits until
every sentinel names another master and that server answers as master.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import redis

from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError

SERVICE = "clarion"
# Sentinel's own defaults are 30 s and 3 min: far too slow for a test.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class _Server(EmbeddedRedis):
    """A data server (master or replica) with extra arguments."""

    def __init__(self, data_dir: Path, binary: str | None, extra: list[str]) -> None:
        super().__init__(data_dir, binary=binary)
        self.extra = extra

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


class _Sentinel(EmbeddedRedis):
    """``redis-server sentinel.conf --sentinel``: the config file must be writable (sentinels
    record what they learn in it)."""

    def __init__(self, data_dir: Path, binary: str | None, master_port: int) -> None:
        super().__init__(data_dir, binary=binary)
        self.master_port = master_port

    def command(self) -> list[str]:
        conf = self.data_dir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
            "",
        ]))
        return [self.binary, str(conf), "--sentinel"]

    def _log_tail(self) -> str:
        log = self.data_dir / "sentinel.log"
        return log.read_text()[-2000:] if log.exists() else ""


class SentinelGroup:
    def __init__(self, tmp_dir: Path, binary: str | None = None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.binary = binary
        self.servers: list[_Server] = []
        self.sentinels: list[_Sentinel] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        try:
            master = _Server(self.tmp_dir / "master", self.binary, [])
            self.servers.append(master.start())
            replica = _Server(self.tmp_dir / "replica", self.binary,
                              ["--replicaof", "127.0.0.1", str(master.port)])
            self.servers.append(replica.start())
            self._wait(lambda: _info(replica.port).get("master_link_status") == "up",
                       timeout, "the replica did not sync with the master")
            for i in range(3):
                self.sentinels.append(
                    _Sentinel(self.tmp_dir / f"sentinel{i}", self.binary, master.port).start())
            self._wait(self._settled, timeout, "the sentinels did not discover each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _settled(self) -> bool:
        for s in self.sentinels:
            state = _sentinel(s.port).sentinel_master(SERVICE)
            if state.get("num-slaves") != 1 or state.get("num-other-sentinels") != 2:
                return False
        return True

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()

    # ------------------------------------------------------------------ settings, state

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def redis_settings(self) -> dict[str, Any]:
        """The ``[redis]`` section (without key_prefix) of a deployment on this group."""
        return {"url": None, "sentinels": self.addresses, "service_name": SERVICE}

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            try:
                host, port = _sentinel(s.port).sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
            except redis.exceptions.ConnectionError:
                continue
        raise EmbeddedRedisError("no sentinel answers")

    def server(self, port: int) -> _Server:
        return next(s for s in self.servers if s.port == port)

    # ------------------------------------------------------------------ faults

    def kill_master(self) -> int:
        """SIGKILL the current master (no shutdown, nothing flushed); its port."""
        server = self.server(self.master_port())
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(5)
        return server.port

    def failover(self) -> int:
        """Ask a sentinel for a graceful failover (the master stays up and becomes a replica);
        the old master's port."""
        old = self.master_port()
        _sentinel(self.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", SERVICE)
        return old

    def wait_for_new_master(self, old: int, timeout: float = 30.0) -> int:
        """Until every sentinel names a master other than ``old`` and it answers as master."""
        def switched() -> bool:
            ports = set()
            for s in self.sentinels:
                _, port = _sentinel(s.port).sentinel_get_master_addr_by_name(SERVICE)
                ports.add(int(port))
            if len(ports) != 1 or old in ports:
                return False
            return _info(ports.pop()).get("role") == "master"

        self._wait(switched, timeout, f"no new master after {timeout} s")
        return self.master_port()

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(f"===== {s.data_dir.name} =====\n{s._log_tail()[-chars:]}"
                         for s in [*self.servers, *self.sentinels])

    @staticmethod
    def _wait(check: Any, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise EmbeddedRedisError(message)


def _info(port: int) -> dict[str, Any]:
    with redis.Redis(port=port, socket_timeout=1) as client:
        return client.info("replication")  # type: ignore[no-any-return]


def _sentinel(port: int) -> _OneShot:
    return _OneShot(port=port, socket_timeout=1, decode_responses=True)


class _OneShot(redis.Redis):
    """A client for one command: closed once it has answered."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)
        finally:
            self.close()


__all__ = ["SERVICE", "SentinelGroup"]
