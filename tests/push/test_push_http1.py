"""The FCM senders' keep-alive HTTP/1.1 client (workers/providers/http1.py) against a real
local server answering as Google's front end may: chunked bodies, ``Connection: close``, a
connection dropped without an answer, an answer that never comes."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.providers.http1 import Http1Pool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[tuple[str, int]] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        type(self).connections.add(self.client_address)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/chunked":
            self.send_response(429)
            self.send_header("Retry-After", "7")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"error":', b'{"code":429}}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self._answer(200, body, close=True)
        elif self.path == "/drop":
            self.close_connection = True
        elif self.path == "/hang":
            time.sleep(1.0)
            self.close_connection = True
        else:
            self._answer(200, body)

    def _answer(self, status: int, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _run(coro_fn):
    async def main():
        return await coro_fn(asyncio.get_running_loop())

    return asyncio.run(main())


def test_keep_alive_echo_on_at_most_limit_connections(server):
    _Handler.connections.clear()

    async def go(loop):
        pool = Http1Pool(server + "/echo", 3, loop)
        head = pool.head({"Content-Type": "application/json"})
        answers = await asyncio.gather(*(pool.post(head, b'{"n":%d}' % i) for i in range(60)))
        pool.close()
        return answers

    answers = _run(go)
    assert [a.body for a in answers] == [b'{"n":%d}' % i for i in range(60)]
    assert {a.status for a in answers} == {200}
    assert 1 <= len(_Handler.connections) <= 3  # 60 requests, reused keep-alive connections


def test_chunked_answer_and_headers(server):
    async def go(loop):
        pool = Http1Pool(server + "/chunked", 2, loop)
        return await pool.post(pool.head({}), b"{}")

    answer = _run(go)
    assert answer.status == 429 and answer.body == b'{"error":{"code":429}}'
    assert answer.headers.get("Retry-After") == "7" and answer.reason == "Too Many Requests"


def test_connection_close_then_a_new_connection(server):
    async def go(loop):
        closing = Http1Pool(server + "/close", 1, loop)
        first = await closing.post(closing.head({}), b"a")
        second = await closing.post(closing.head({}), b"b")
        return first, second, closing._open

    first, second, still_open = _run(go)
    assert (first.body, second.body) == (b"a", b"b")
    assert still_open == 0  # each closed by the server, none left counted


def test_dropped_without_answer_raises_and_the_pool_recovers(server):
    async def go(loop):
        pool = Http1Pool(server + "/drop", 1, loop)
        with pytest.raises(OSError):
            await pool.post(pool.head({}), b"x")
        echo = Http1Pool(server + "/echo", 1, loop)
        return await echo.post(echo.head({}), b"ok")

    assert _run(go).body == b"ok"


def test_a_request_given_up_closes_its_connection(server):
    async def go(loop):
        pool = Http1Pool(server + "/hang", 1, loop)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post(pool.head({}), b"x")
        # The place is free again at once: the hung connection is never reused.
        return pool._open, len(pool._idle)

    assert _run(go) == (0, 0)
