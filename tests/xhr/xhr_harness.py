"""Real pusher-js 8 clients (the Node build) on one of its HTTP transports, and what the tests
read from a node: its /ready counts.

pusher-js is installed from the npm registry into a cache directory the first time
(_harness/node.py); the tests are skipped, with the reason, on a machine without node and npm.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from _harness.cluster import APP_KEY, APP_SECRET, Cluster
from _harness.node import Observer, npm_modules

from gateway.processes import Child, wait_http_ready

SCRIPT = Path(__file__).parents[1] / "_harness" / "js" / "pusher_js_client.js"
TRANSPORTS = ["xhr_streaming", "xhr_polling"]


def install_pusher_js() -> Path:
    return npm_modules("pusher-js", ["pusher-js@8"], "to run pusher-js")


class PusherJsHttp(Observer):
    """One pusher-js client in a node process: commands on stdin, observations on stdout."""

    def __init__(self, node_modules: Path, port: int, user_id: str, transport: str) -> None:
        super().__init__(SCRIPT, {"NODE_PATH": str(node_modules), "KEY": APP_KEY,
                                  "SECRET": APP_SECRET, "PORT": str(port), "USER_ID": user_id,
                                  "TRANSPORT": transport})


def ready(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
        return json.loads(answer.read())


def wait_ready_counts(port: int, timeout: float = 15.0, **expected: int) -> dict[str, Any]:
    """Wait until the node's /ready shows ``expected`` (e.g. connections=0, http_sessions=0)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = ready(port)
        if all(seen.get(k) == v for k, v in expected.items()):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"/ready never showed {expected}: {seen}")
        time.sleep(0.2)


def restart_node(cluster: Cluster, i: int, sig: int = signal.SIGKILL,
                 down: float = 1.0) -> None:
    """Kill node ``i``'s process group, stay down ``down`` seconds, start it on the same port."""
    cluster.nodes[i].kill_group(sig)
    cluster.nodes[i].stop(5, signalled=True)
    time.sleep(down)
    log = cluster.tmp_dir / "logs" / f"ws{i}-restarted-{time.monotonic_ns()}.log"
    child = Child.cli(f"ws{i}", cluster.node_settings(i), "ws", "--processes", "1",
                      log_path=log).start()
    cluster.nodes[i] = child
    wait_http_ready(cluster.node_ready_url(i), child, 30)


# --------------------------------------------------------------------------- by hand

QUERY = "protocol=7&client=js&version=8.6.0"


class Session:
    """What pusher-js's HTTP socket does, by hand: a session id, receive and send requests."""

    def __init__(self, port: int, sid: str, key: str = APP_KEY) -> None:
        self.port = port
        self.base = f"/pusher/app/{key}/{sid}"

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def poll(self) -> tuple[int, bytes]:
        c = self.conn()
        c.request("POST", f"{self.base}/xhr?{QUERY}", body=b"")
        answer = c.getresponse()
        body = answer.read()
        c.close()
        return answer.status, body

    def send(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        c = self.conn()
        c.request("POST", f"{self.base}/xhr_send?t=1&n=1", body=body,
                  headers={"Content-Type": "application/json", **(headers or {})})
        answer = c.getresponse()
        raw = answer.read()
        c.close()
        return answer.status, json.loads(raw) if raw else None

    def message(self, event: str, data: Any) -> tuple[int, Any]:
        return self.send(json.dumps([json.dumps({"event": event, "data": data})]).encode())

    def stream(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        c = self.conn()
        c.request("POST", f"{self.base}/xhr_streaming?{QUERY}", body=b"")
        return c, c.getresponse()


def messages(body: bytes) -> list[dict[str, Any]]:
    """The Pusher messages of a receive answer's ``a`` lines."""
    found = []
    for line in body.split(b"\n"):
        if line.startswith(b"a"):
            found += [json.loads(m) for m in json.loads(line[1:])]
    return found


def open_polling(port: int, sid: str) -> tuple[Session, str]:
    s = Session(port, sid)
    status, body = s.poll()
    assert status == 200 and body.startswith(b"o\n")
    seen = messages(body)
    while not seen:
        seen = messages(s.poll()[1])
    assert seen[0]["event"] == "pusher:connection_established"
    return s, json.loads(seen[0]["data"])["socket_id"]
