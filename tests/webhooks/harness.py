"""Helpers for the webhook tests: a real HTTP receiver on loopback whose answers the test
controls, webhooks worker subprocesses, and Reporters standing for WebSocket nodes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _harness.worker import CeleryWorker

from config.settings import Settings

APP = {"id": "1", "key": "wh-key", "secret": "wh-secret"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int = 0

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers["x-clarion-webhook-id"]

    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self.json["events"]]


# (status, headers, body, delay seconds)
Answer = tuple[int, dict[str, str], bytes, float]


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1; ``behaviour(request) -> Answer`` decides."""

    behaviour: Callable[[Received], Answer] = lambda r: (200, {}, b"ok", 0.0)
    requests: list[Received] = field(default_factory=list)
    port_: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                req = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                               body, time.time())
                receiver.requests.append(req)
                status, headers, payload, delay = receiver.behaviour(req)
                req.answered = status
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port_), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if 200 <= r.answered < 300]

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        """Events of 2xx-answered requests, deduplicated by delivery id."""
        seen: set[str] = set()
        out = []
        for r in self.delivered():
            if (path is None or r.path == path) and r.delivery_id not in seen:
                seen.add(r.delivery_id)
                out += r.json["events"]
        return out

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WebhookWorker(CeleryWorker):
    """``run_worker(settings, queues=("webhooks",))`` in its own process group."""

    def __init__(self, settings: Settings, log_path: Path, concurrency: int = 2,
                 pool: str = "prefork") -> None:
        super().__init__(settings, log_path, ("webhooks",), concurrency, pool)


def webhook(url: str, *events: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "events": list(events), **extra}


ALL_EVENTS = ("channel_occupied", "channel_vacated", "member_added", "member_removed",
              "client_event", "cache_miss", "subscription_count")


def make_settings(redis_url: str, prefix: str, webhooks: list[dict[str, Any]],
                  **wh: Any) -> Settings:
    base = {
        "retry_schedule": [0.3, 0.3], "jitter": 0.0, "debounce": 0.5, "batch_window": 0.05,
        "timeout": 2.0, "tick": 0.05, "lease": 2.0, "allowed_networks": ["127.0.0.0/8"],
        "subscription_count_interval": 0.2,
    }
    base.update(wh)
    return Settings(
        redis={"url": redis_url, "key_prefix": prefix},
        apps=[{**APP, "webhooks": webhooks}],
        worker={"concurrency": 2, "visibility_timeout": 300, "restore_interval": 1},
        webhooks=base,
        websocket={"node_timeout": 3.0},
    )
