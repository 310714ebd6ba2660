"""Headless Chromium for the browser tests, driven through a Node script of the test's own.

Each browser test has a small playwright-core script (``js/*.mjs`` beside the test) that reads
one JSON command a line on stdin and answers one JSON line on stdout; this is the Python end of
that conversation. Debian's ``chromium`` by default (``CLARION_TEST_CHROMIUM`` to use another).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _harness.node import NodeScript

CHROMIUM = os.environ.get("CLARION_TEST_CHROMIUM", "/usr/bin/chromium")


def require_chromium() -> None:
    """Fail (not skip) without the browser: the browser tests are part of the suite."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(.ci/run installs it)")


class Site:
    """A test page and its scripts on a localhost port of their own (a thread): ``files`` maps
    a URL path to (file, content type); ``/config.json`` answers ``config``."""

    def __init__(self, files: dict[str, tuple[Path, str]], config: dict[str, Any]) -> None:
        config_body = json.dumps(config).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/config.json":
                    body, kind = config_body, "application/json"
                elif self.path in files:
                    path, kind = files[self.path]
                    body = path.read_bytes()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrowserDriver(NodeScript):
    """One ``node SCRIPT`` process holding one headless Chromium page."""

    def __init__(self, script: Path, node_modules: Path) -> None:
        super().__init__(script, {"NODE_MODULES": str(node_modules), "CHROMIUM": CHROMIUM},
                         "browser")
        self.version = self.answer("ready", 60)["version"]

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op=op, **args)
        return self.answer(op)

    def until(self, check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        """``check()``'s first truthy answer; the page's last console lines if none comes."""
        deadline = time.monotonic() + timeout
        while not (got := check()):
            if time.monotonic() > deadline:
                logs = self.ask("console")["lines"][-10:]
                raise AssertionError(f"the page never showed {what}; console: {logs}")
            time.sleep(0.2)
        return got

    def look_until(self, check: Callable[[dict[str, Any]], Any], what: str,
                   timeout: float = 30.0) -> dict[str, Any]:
        """The script's ``look`` answer once ``check`` accepts it."""
        seen: dict[str, Any] = {}

        def look() -> dict[str, Any] | None:
            nonlocal seen
            seen = self.ask("look")
            return seen if check(seen) else None

        try:
            return self.until(look, what, timeout)  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
