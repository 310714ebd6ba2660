"""Servers under test: a spec string for a running server, or a preset that starts one.

Spec: ``name=ws_url,http_url,app_id,key,secret[,pid...]``, e.g.
``mine=ws://127.0.0.1:7420,http://127.0.0.1:7421,1,app-key,app-secret,4242``.
Without PIDs, the processes listening on the two ports are measured. Every PID is measured
together with its descendants.

Presets (started and stopped by the bench, one at a time):
  soketi   installed on first use and started by bench/soketi.py
  clarion  ``.venv/bin/clarion up --config FILE`` (this checkout's) with a generated config
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench import soketi
from bench.dashboard_watch import TOKEN as DASHBOARD_TOKEN
from bench.procstats import ServerProcesses, pids_listening_on
from bench.publisher import App, Publisher
from bench.wsframes import Endpoint, require_local

REPO = Path(__file__).resolve().parent.parent
CLARION_BIN = Path(os.environ.get("BENCH_CLARION_BIN", REPO / ".venv/bin/clarion"))


class TargetUnavailable(RuntimeError):
    """A preset could not be started; the run goes on with the other targets."""


@dataclass
class Target:
    name: str
    ws_url: str
    http_url: str
    app: App
    pids: list[int] = field(default_factory=list)
    launcher: Launcher | None = None

    def endpoint(self) -> Endpoint:
        return Endpoint.for_app(self.ws_url, self.app.key)

    def publisher(self) -> Publisher:
        return Publisher(self.app)

    def processes(self) -> ServerProcesses:
        return ServerProcesses(self.pids)

    def start(self, log_dir: Path) -> None:
        if self.launcher:
            self.pids = [self.launcher.start(self, log_dir)]
        elif not self.pids:
            ports = {_port(self.ws_url), _port(self.http_url)}
            self.pids = pids_listening_on(*ports)
        if not self.pids:
            print(f"[{self.name}] warning: no server PID known, CPU and RSS will read 0")

    def stop(self) -> None:
        if self.launcher:
            self.launcher.stop()


def parse_spec(spec: str) -> Target:
    name, sep, rest = spec.partition("=")
    fields = rest.split(",")
    if not sep or len(fields) < 5:
        raise ValueError(
            f"bad target {spec!r}: want name=ws_url,http_url,app_id,key,secret[,pid...]")
    ws_url, http_url, app_id, key, secret, *pids = fields
    for url in (ws_url, http_url):
        require_local(urlsplit(url).hostname or "")
    return Target(name, ws_url, http_url, App(http_url, app_id, key, secret),
                  [int(p) for p in pids if p])


def _port(url: str) -> int:
    return urlsplit(url).port or 80


# --------------------------------------------------------------------------- launchers


class Launcher:
    """Starts one server process (by PID), waits until it serves, stops it and its children."""

    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.family: set[int] = set()
        self.log_path: Path | None = None

    def command(self, log_dir: Path) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_ready(self, target: Target, deadline: float) -> None:
        raise NotImplementedError

    def start(self, target: Target, log_dir: Path) -> int:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        cmd = self.command(log_dir)
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.environment(), preexec_fn=_raise_nofile)
        log.close()
        try:
            self.wait_ready(target, time.monotonic() + 60)
        except Exception as exc:
            self.stop()
            raise TargetUnavailable(
                f"{self.name} did not start: {exc}\n"
                f"--- last lines of {self.log_path}:\n{self.log_tail()}") from exc
        self._remember_family()
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"exited with code {self.proc.returncode}")

    def _remember_family(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
            self.family = {p.pid for p in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        if self.proc is None:
            return
        self._remember_family()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.family:  # children this launcher's process started, by PID
            try:
                child = psutil.Process(pid)
                child.terminate()
                child.wait(5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class SoketiLauncher(Launcher):
    name = "soketi"

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def command(self, log_dir: Path) -> list[str]:
        try:
            return soketi.command()
        except RuntimeError as exc:
            raise TargetUnavailable(str(exc)) from exc

    def environment(self) -> dict[str, str]:
        return soketi.environment(self.port)

    def wait_ready(self, target: Target, deadline: float) -> None:
        _poll(lambda: _http_ok(f"http://127.0.0.1:{self.port}/"), deadline, self.check_alive)
        _poll(lambda: _probe_ok(target), deadline, self.check_alive)


class ClarionLauncher(Launcher):
    """`clarion up` with a generated config. Adjust CONFIG or command() if the CLI changes."""

    name = "clarion"
    CONFIG = """\
data_dir = "{data_dir}"
log_level = "warning"

[websocket]
host = "127.0.0.1"
port = {ws_port}
processes = {ws_processes}

[api]
host = "127.0.0.1"
port = {api_port}

[worker]
pool = "{worker_pool}"

[dashboard]
enabled = {dashboard_enabled}
admin_token = "{dashboard_token}"

[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
"""

    def __init__(self, ws_port: int, api_port: int, ws_processes: int = 1,
                 redis_port: int | None = None, worker_pool: str = "prefork",
                 dashboard: bool = True) -> None:
        super().__init__()
        self.ws_port, self.api_port, self.ws_processes = ws_port, api_port, ws_processes
        self.dashboard = dashboard
        self.worker_pool = worker_pool
        self.redis_port = redis_port if redis_port else api_port + 1
        self.data_dir = Path(".")  # set by command(): a fresh directory per start

    def command(self, log_dir: Path) -> list[str]:
        if not CLARION_BIN.exists():
            raise TargetUnavailable(f"{CLARION_BIN} not found (is the project installed?)")
        workdir = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
        self.data_dir = workdir / "data"
        config = workdir / "clarion.toml"
        config.write_text(self.CONFIG.format(
            data_dir=workdir / "data", ws_port=self.ws_port, api_port=self.api_port,
            ws_processes=self.ws_processes, worker_pool=self.worker_pool,
            dashboard_enabled=str(self.dashboard).lower(), dashboard_token=DASHBOARD_TOKEN))
        (log_dir / "clarion.toml").write_text(config.read_text())
        # `--config` is an option of the `clarion` group, so it goes before `up`.
        return [str(CLARION_BIN), "--config", str(config), "up",
                "--redis-port", str(self.redis_port)]

    def wait_ready(self, target: Target, deadline: float) -> None:
        _poll(lambda: _http_ok(f"http://127.0.0.1:{self.ws_port}/ready"), deadline,
              self.check_alive)
        _poll(lambda: _probe_ok(target), deadline, self.check_alive)
        # `clarion up` writes it when its start-up checks are done: measuring before that would
        # count their CPU (a scan of the machine's sockets) against the scenario.
        _poll(lambda: (self.data_dir / "runtime.json").exists(), deadline, self.check_alive)


def soketi_preset(port: int) -> Target:
    app = App(f"http://127.0.0.1:{port}", "app-id", "app-key", "app-secret")
    return Target("soketi", f"ws://127.0.0.1:{port}", app.http_url, app,
                  launcher=SoketiLauncher(port))


def clarion_preset(ws_port: int, api_port: int, ws_processes: int = 1,
                   redis_port: int | None = None, worker_pool: str = "prefork",
                   dashboard: bool = True) -> Target:
    app = App(f"http://127.0.0.1:{api_port}", "1", "app-key", "app-secret")
    return Target("clarion", f"ws://127.0.0.1:{ws_port}", app.http_url, app,
                  launcher=ClarionLauncher(ws_port, api_port, ws_processes, redis_port,
                                           worker_pool, dashboard))


# --------------------------------------------------------------------------- helpers


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.setpgrp()  # keep Ctrl-C of the bench from reaching the server before we stop it


def _poll(check, deadline: float, alive) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        alive()
        try:
            if check():
                return
        except Exception as exc:
            last_error = exc
        time.sleep(0.25)
    raise TimeoutError(f"not ready in time (last error: {last_error!r})")


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _http_ok(url: str) -> bool:
    with _DIRECT.open(url, timeout=2) as resp:
        return resp.status == 200


def _probe_ok(target: Target) -> bool:
    response = asyncio.run(target.publisher().probe())
    if response.status != 200:
        raise RuntimeError(
            f"signed probe event answered {response.status}: {response.body[:200]!r}")
    return True
