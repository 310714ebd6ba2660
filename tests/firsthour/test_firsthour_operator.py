"""Issue 15, items 1, 2, 4 and the CLI's webhook endpoints: a fresh `clarion up` in a temp dir,
then the operator commands typed in the same directory, without flags."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pusher
import pytest
from _harness import PusherClient
from _harness.client import RejectedConnection
from firsthour_harness import Up, clarion

from gateway.cli.runtime import foreign_listeners

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    instance = Up(tmp_path_factory.mktemp("fresh"),
                  CLARION_WEBHOOKS__ALLOWED_NETWORKS='["127.0.0.0/8"]',
                  CLARION_WEBHOOKS__BATCH_WINDOW="0", CLARION_LOG_LEVEL="info")
    try:
        instance.wait_banner()
        yield instance
    finally:
        instance.kill()


def demo(up: Up) -> dict[str, str]:
    return json.loads((up.cwd / ".clarion" / "demo-app.json").read_text())


def sdk_for(up: Up, app: dict[str, str]) -> pusher.Pusher:
    return pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"],
                         host="127.0.0.1", port=up.api_port, ssl=False, timeout=5)


def ws_url(up: Up, key: str) -> str:
    return f"ws://127.0.0.1:{up.ws_port}/app/{key}?protocol=7&client=js&version=8.4.0"


def test_operator_commands_find_the_running_up(up: Up):
    """Item 2: no `redis.url is not set`; the random Redis port is recorded in the data dir."""
    runtime = json.loads((up.cwd / ".clarion" / "runtime.json").read_text())
    assert runtime["redis_url"] == f"redis://127.0.0.1:{up.redis_port}/0"
    assert runtime["api_url"] == f"http://127.0.0.1:{up.api_port}"
    assert runtime["demo_app_id"] == "1" and runtime["children"]["api"] > 0

    listed = clarion(up.cwd, "apps", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"id": "1", "key": demo(up)["key"], "enabled": True, "source": "demo"} in (
        json.loads(listed.stdout))
    status = json.loads(clarion(up.cwd, "status", "--json").stdout)
    assert status["pid"] == up.proc.pid and status["api_url"] == runtime["api_url"]
    commands = [p["command"] for p in status["processes"]]
    assert "api" in commands and any(c.startswith("worker --queues live") for c in commands)
    endpoints = clarion(up.cwd, "webhooks", "endpoints", "--app", "1")
    assert endpoints.returncode == 0, endpoints.stderr
    # Item 10: the README's `clarion push status ID`, without --app.
    status = clarion(up.cwd, "push", "status", "pubid-none")
    assert status.returncode == 1 and "no publish pubid-none for app 1" in status.stderr


def test_operator_commands_say_what_to_do_when_nothing_runs(tmp_path: Path):
    status = clarion(tmp_path, "status")
    assert status.returncode == 3 and "no `clarion up` is running" in status.stderr
    out = clarion(tmp_path, "apps", "list")
    assert out.returncode == 2
    assert "no `clarion up` is running with data dir" in out.stderr
    assert "CLARION_REDIS__URL" in out.stderr and "Traceback" not in out.stderr


def test_apps_add_show_remove_never_touch_the_demo_app(up: Up):
    """Item 1: `apps add` without --id used to take id 1 and replace the demo app."""
    added = clarion(up.cwd, "apps", "add", "--json")
    assert added.returncode == 0, added.stderr
    app = json.loads(added.stdout)
    assert app["id"] != "1"
    # The banner's app still works, and the new one too.
    for creds in (demo(up), app):
        assert sdk_for(up, creds).trigger("first-hour", "e", {"x": 1}) == {}

    rows = {r["id"]: r for r in json.loads(clarion(up.cwd, "apps", "list", "--json").stdout)}
    assert rows["1"]["source"] == "demo" and rows[app["id"]]["source"] == "store"
    shown = json.loads(clarion(up.cwd, "apps", "show", app["id"], "--json").stdout)
    assert shown["source"] == "store" and shown["secret"] == app["secret"]
    assert shown["max_connections"] is None and shown["webhooks"] == []

    refused = clarion(up.cwd, "apps", "remove", "1")
    assert refused.returncode == 1 and "demo app" in refused.stderr
    missing = clarion(up.cwd, "apps", "remove", "999")
    assert missing.returncode == 1 and "no app '999'" in missing.stderr
    taken = clarion(up.cwd, "apps", "add", "--id", "1")
    assert taken.returncode == 1 and "already exists" in taken.stderr

    with PusherClient.connect(ws_url(up, app["key"])) as client:
        removed = clarion(up.cwd, "apps", "remove", app["id"])
        assert removed.returncode == 0, removed.stderr
        assert client.wait_closed(10) == 4003  # its connections are closed at once
    with pytest.raises(RejectedConnection) as rejected:
        PusherClient.connect(ws_url(up, app["key"]))
    assert rejected.value.close_code == 4001
    listed = json.loads(clarion(up.cwd, "apps", "list", "--json").stdout)
    assert [r["id"] for r in listed] == ["1"]


class Receiver:
    """A webhook endpoint on a free port that keeps every body it is sent."""

    def __init__(self) -> None:
        bodies: queue.Queue[dict] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                size = int(self.headers["Content-Length"])
                bodies.put(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, timeout: float) -> list[dict]:
        deadline, seen = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            try:
                seen += self.bodies.get(timeout=0.2)["events"]
            except queue.Empty:
                if seen:
                    return seen
        return seen


def test_webhook_endpoints_added_and_removed_from_the_cli(up: Up):
    receiver = Receiver()
    try:
        added = clarion(up.cwd, "webhooks", "add", receiver.url, "--events",
                        "channel_occupied", "--app", "1")
        assert added.returncode == 0, added.stderr
        again = clarion(up.cwd, "webhooks", "add", receiver.url, "--events",
                        "channel_occupied", "--app", "1")
        assert again.returncode == 1 and "already has an endpoint" in again.stderr
        bad = clarion(up.cwd, "webhooks", "add", receiver.url + "2", "--events", "nope",
                     "--app", "1")
        assert bad.returncode == 1 and "invalid app: webhooks.1.events" in bad.stderr
        time.sleep(1.5)  # nodes re-read the store at least every second

        with PusherClient.connect(ws_url(up, demo(up)["key"])) as client:
            client.subscribe("hooked")
            events = receiver.events(15)
        assert {"name": "channel_occupied", "channel": "hooked"} in events

        endpoint_id = added.stdout.split()[0]
        removed = clarion(up.cwd, "webhooks", "remove", endpoint_id, "--app", "1")
        assert removed.returncode == 0, removed.stderr
        gone = clarion(up.cwd, "webhooks", "remove", endpoint_id, "--app", "1")
        assert gone.returncode == 1 and "has no endpoint" in gone.stderr
        time.sleep(1.5)
        with PusherClient.connect(ws_url(up, demo(up)["key"])) as client:
            client.subscribe("unhooked")
            assert receiver.events(3) == []
    finally:
        receiver.server.shutdown()


def test_a_second_up_is_refused_and_the_first_keeps_serving(up: Up):
    """Item 4: a second instance used to share the API port (SO_REUSEPORT) and print "up"."""
    same_dir = Up(up.cwd)
    try:
        assert same_dir.wait_exit() == 1
        assert "another `clarion up` (pid" in same_dir.text and "Clarion is up" not in (
            same_dir.text)
    finally:
        same_dir.kill()
    same_ports = Up(up.cwd / "elsewhere", ws_port=up.ws_port, api_port=up.api_port)
    try:
        assert same_ports.wait_exit() == 1
        assert f"port {up.api_port} (api.port) is already in use" in same_ports.text
    finally:
        same_ports.kill()
    sdk = sdk_for(up, demo(up))
    for i in range(20):
        assert sdk.trigger("still-mine", "e", {"i": i}) == {}
    assert json.loads((up.cwd / ".clarion" / "runtime.json").read_text())["pid"] == up.proc.pid


CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(debug|info|warning|error|critical) *\] ")


def test_one_log_format_from_every_component(up: Up):
    """Item 11: granian's, the node's and Celery's lines used to come in three formats, with
    Celery's banner and its superuser warning in between."""
    before = up.text.split("Clarion is up.")[0]
    lines = [line for line in before.splitlines() if line.strip()]
    assert [line for line in lines if not CONSOLE_LINE.match(line)] == []
    for logger in ("[_granian]", "[clarion.ws.node]", "[celery.apps.worker]"):
        assert logger in before, logger
    assert "SecurityWarning" not in up.text and "[queues]" not in up.text


def test_config_apps_seen_by_operator_commands_without_the_config(tmp_path: Path):
    """Item 1 with a config file: `apps add` took id 1 and replaced the file's app 1. The
    operator commands, typed without --config, act on the running instance's apps."""
    config = tmp_path / "clarion.toml"
    config.write_text('[[apps]]\nid = "1"\nkey = "file-key"\nsecret = "file-secret"\n')
    up = Up(tmp_path / "run", "--config", str(config))
    try:
        up.wait_banner()
        added = clarion(up.cwd, "apps", "add", "--json")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["id"] == "2"
        rows = {r["id"]: r["source"]
                for r in json.loads(clarion(up.cwd, "apps", "list", "--json").stdout)}
        assert rows == {"1": "config", "2": "store"}
        refused = clarion(up.cwd, "apps", "remove", "1")
        assert refused.returncode == 1 and "comes from the config file" in refused.stderr
        sdk = sdk_for(up, {"id": "1", "key": "file-key", "secret": "file-secret"})
        assert sdk.trigger("still-the-files", "e", {}) == {}
        assert oct((up.cwd / ".clarion" / "runtime.json").stat().st_mode & 0o777) == "0o600"
    finally:
        up.kill()


def test_a_port_shared_through_so_reuseport_is_seen():
    """The check `clarion up` makes once its children answer (item 4's race)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert foreign_listeners([port], ours={os.getpid()}) == {port: []}
        assert foreign_listeners([port], ours=set()) == {port: [os.getpid()]}
