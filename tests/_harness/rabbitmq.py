"""A private RabbitMQ for the tests: its own node, ports, data and logs in a temporary directory.

It never touches a RabbitMQ the machine may run: the node has its own name, AMQP port,
distribution port and epmd port (``ERL_EPMD_PORT``: a private epmd, stopped with the node),
its own Mnesia and log directories, an empty plugin list and ``HOME`` (the Erlang cookie) in
the directory. It runs as the current user: Debian's ``/usr/sbin/rabbitmq-server`` switches to
the ``rabbitmq`` user and its system directories, so the script behind it
(``/usr/lib/rabbitmq/bin``) is run instead when it is there.

Each deployment gets a virtual host of its own (``new_vhost``), so that tests sharing one
server never see each other's queues.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from gateway.embedded_redis import free_port

DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
INSTALL_HINT = "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"


def rabbitmq_scripts() -> Path | None:
    """The directory of ``rabbitmq-server`` and ``rabbitmqctl``, or None if not installed."""
    if (DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server")
    return Path(found).parent if found else None


class RabbitMQError(RuntimeError):
    pass


class RabbitMQ:
    """One RabbitMQ node on 127.0.0.1, user guest/guest (allowed from anywhere: loopback only
    listens anyway)."""

    def __init__(self, data_dir: Path, scripts: Path) -> None:
        self.dir = Path(data_dir).resolve()
        self.scripts = scripts
        self.node = f"clarion-{uuid.uuid4().hex[:8]}@localhost"
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "/") -> str:
        path = "%2F" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{path}"

    def _env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        }

    def start(self, timeout: float = 60.0) -> RabbitMQ:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # The tests' disks may be nearly full; RabbitMQ would block publishers below 50 MB.
            "disk_free_limit.absolute = 1MB\n"
        )
        log = (self.dir / "server.log").open("ab")
        # Its own session: stopped through its start script, which stops the Erlang VM cleanly.
        self.process = subprocess.Popen(
            [str(self.scripts / "rabbitmq-server")], env=self._env(), cwd=self.dir,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RabbitMQError(f"rabbitmq-server exited:\n{self.log_tail()}")
            if "Server startup complete" in self.log_tail(20_000) and self._accepts():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RabbitMQError(f"rabbitmq-server not ready in {timeout}s:\n"
                                    f"{self.log_tail()}")
            time.sleep(0.2)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean stop: durable queues and persistent messages are kept), then
        SIGKILL of its session if it is still there; then its private epmd."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
            self.process = None
        epmd = shutil.which("epmd", path=f"{os.environ.get('PATH', '')}:/usr/lib/erlang/bin")
        if epmd:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self._env(),
                           capture_output=True, timeout=10, check=False)

    def restart(self, downtime: float = 1.0) -> None:
        """Stop cleanly, stay down ``downtime`` seconds, start again on the same ports and
        data (queues and persistent messages survive)."""
        self.stop()
        time.sleep(downtime)
        self.start()

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.node, *args], env=self._env(),
            capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise RabbitMQError(f"rabbitmqctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def new_vhost(self) -> str:
        """A fresh virtual host the guest user may use; its name."""
        name = f"v{uuid.uuid4().hex[:10]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in [self.dir / "server.log", *sorted((self.dir / "log").glob("*.log"))]:
            if path.exists():
                parts.append(path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)
