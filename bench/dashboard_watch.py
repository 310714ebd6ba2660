"""An open dashboard console, for measuring what watching costs (docs/dashboard.md): signs in
and polls the app's debug log every second from a thread, as the page does, which keeps the
app watched so the API, nodes and workers write its log."""

from __future__ import annotations

import json
import threading
import urllib.request

TOKEN = "bench-dashboard-token-0123456789"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConsoleWatcher:
    def __init__(self, api_url: str, app_id: str = "1") -> None:
        self.base = f"{api_url}/dashboard/api"
        self.app_id = app_id
        self.polls = 0
        self.entries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _request(self, path: str, body: dict | None = None, cookie: str = "") -> tuple[dict, str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, headers={
            "Content-Type": "application/json", "Cookie": cookie})
        with _DIRECT.open(req, timeout=10) as resp:
            return json.loads(resp.read()), resp.headers.get("Set-Cookie", "")

    def start(self) -> ConsoleWatcher:
        _, set_cookie = self._request("/signin", {"token": TOKEN})
        self.cookie = set_cookie.split(";", 1)[0]
        self._thread.start()
        return self

    def _run(self) -> None:
        after = ""
        while not self._stop.is_set():
            query = f"?after={after}" if after else ""
            try:
                got, _ = self._request(f"/apps/{self.app_id}/log{query}", cookie=self.cookie)
            except OSError:
                got = {"entries": []}
            self.polls += 1
            self.entries += len(got["entries"])
            if got["entries"]:
                after = got["entries"][0]["id"]
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
