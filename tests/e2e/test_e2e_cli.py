"""`clarion up` as a user runs it: embedded Redis, demo app, banner, a working gateway, a clean
stop on Ctrl-C / SIGTERM, components restarted when they die, a clean failure when one keeps
dying or the config is bad."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pusher
import pytest
from _harness import PusherClient
from _harness.client import data_of

from gateway.embedded_redis import free_port

pytestmark = pytest.mark.slow


class Up:
    """A `clarion up` process with its output read line by line."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.ws_port, self.api_port, self.redis_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        env.update(
            CLARION_DATA_DIR=str(data_dir),
            CLARION_WEBSOCKET__PORT=str(self.ws_port),
            CLARION_API__PORT=str(self.api_port),
            CLARION_API__WORKERS="1",
            CLARION_WORKER__CONCURRENCY="1",
            CLARION_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--redis-port", str(self.redis_port),
             *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_banner(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        banner = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.output)
                continue
            banner.append(line)
            if "Press Ctrl-C to stop." in line:
                return "".join(banner)
        raise AssertionError(f"no banner in {timeout}s:\n{''.join(self.output)}")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 40) -> int:
        # A terminal's Ctrl-C reaches the whole foreground process group: do the same.
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def assert_gone(processes: list[psutil.Process], timeout: float = 10) -> None:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def test_up_serves_prints_its_addresses_and_stops_cleanly(tmp_path):
    up = Up(tmp_path / "data")
    try:
        banner = up.wait_banner()
        app = json.loads((tmp_path / "data" / "demo-app.json").read_text())
        assert app["id"] == "1" and len(app["key"]) >= 16 and len(app["secret"]) >= 32
        assert f"ws://127.0.0.1:{up.ws_port}/app/{app['key']}" in banner
        assert f"http://127.0.0.1:{up.api_port}" in banner
        assert f"redis://127.0.0.1:{up.redis_port}/0" in banner
        for text in (app["secret"], "wsHost: '127.0.0.1'", f"wsPort: {up.ws_port}",
                     "forceTLS: false", "enabledTransports: ['ws']", "cluster: 'mt1'"):
            assert text in banner, text

        # It works, with the demo app, as printed.
        url = re.search(r"ws://\S+", banner).group(0)
        sdk = pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"],
                            host="127.0.0.1", port=up.api_port, ssl=False)
        with PusherClient.connect(url + "?protocol=7&client=js&version=8.4.0&flash=false",
                                  auth=sdk) as client:
            client.subscribe("private-demo")
            sdk.trigger("private-demo", "hello", {"from": "clarion up"})
            assert data_of(client.wait_for("hello", "private-demo")) == {"from": "clarion up"}

        family = up.descendants()
        assert len(family) >= 5  # redis, api, ws, two workers (and their own children)
        workers = [p.cmdline() for p in psutil.Process(up.proc.pid).children()
                   if "worker" in p.cmdline()]
        # Live delivery in a worker of its own, apart from push and webhooks.
        assert sorted(c[c.index("--queues") + 1] for c in workers) == ["live", "push,webhooks"]
        assert up.stop(signal.SIGINT) == 0
        assert_gone(family)
    finally:
        up.kill()

    # A second run keeps the demo app (clients configured with its key keep working).
    again = Up(tmp_path / "data")
    try:
        assert f"/app/{app['key']}" in again.wait_banner()
        family = again.descendants()
        assert again.stop(signal.SIGTERM) == 0
        assert_gone(family)
    finally:
        again.kill()


def _child(up: Up, command: str) -> psutil.Process:
    return next(p for p in psutil.Process(up.proc.pid).children()
                if command in p.cmdline()[3:4])


def _demo_sdk(up: Up, data_dir: Path) -> tuple[pusher.Pusher, str]:
    app = json.loads((data_dir / "demo-app.json").read_text())
    sdk = pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"],
                        host="127.0.0.1", port=up.api_port, ssl=False, timeout=5)
    url = (f"ws://127.0.0.1:{up.ws_port}/app/{app['key']}"
           "?protocol=7&client=js&version=8.4.0&flash=false")
    return sdk, url


def _delivers(sdk: pusher.Pusher, url: str, timeout: float = 30) -> None:
    """A subscriber gets an event triggered through the API (retrying until it does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with PusherClient.connect(url, auth=sdk) as client:
                client.subscribe("up-check")
                sdk.trigger("up-check", "ping", {"n": 1})
                client.wait_for("ping", "up-check", timeout=5)
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_up_restarts_components_that_die(tmp_path):
    """The worker, the WebSocket node, the API and the embedded Redis each SIGKILLed in turn:
    `clarion up` says so, restarts it, and the gateway works again each time."""
    up = Up(tmp_path / "data")
    try:
        up.wait_banner()
        sdk, url = _demo_sdk(up, tmp_path / "data")
        for command in ("worker", "ws", "api", "redis-server"):
            victim = (_child(up, command) if command != "redis-server" else
                      next(p for p in up.descendants() if "redis-server" in p.name()))
            victim.send_signal(signal.SIGKILL)
            _delivers(sdk, url)
            assert up.proc.poll() is None, "".join(up.output)
        out = "".join(up.output)
        for name in ("worker", "ws", "api", "redis"):
            assert re.search(rf"{name}\b.*restarting it in", out), out
        assert up.stop(signal.SIGINT) == 0
    finally:
        up.kill()


def test_up_gives_up_on_a_component_that_keeps_dying(tmp_path):
    """The node is killed and its port taken by another program: each restart fails at once.
    After five deaths in a minute `clarion up` stops everything and says which one."""
    up = Up(tmp_path / "data")
    try:
        up.wait_banner()
        family = up.descendants()
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _child(up, "ws").send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                squatter.bind(("127.0.0.1", up.ws_port))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        squatter.listen()
        try:
            assert up.proc.wait(90) == 1
        finally:
            squatter.close()
        out = "".join(up.output)
        assert "ws died 5 times within 60 s" in out and "giving up" in out, out
        assert_gone(family)
    finally:
        up.kill()


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "clarion.toml"
    config.write_text('[websocket]\nport = "not a port"\n[api]\nthreads = 0\n')
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "up"],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("CLARION_")},
    )
    assert out.returncode == 2
    assert "websocket.port" in out.stderr and "api.threads" in out.stderr
    assert "Traceback" not in out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "ws"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "CLARION_CONFIG": str(tmp_path / "nope.toml")},
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_version():
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "version"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("clarion ")
