"""Slow clients against a real ``clarion api`` process (granian, the default server).

A client that declares a body and sends it a byte at a time must hold no thread: signed requests
from the official SDK keep answering fast while hundreds of them are open, and each one is cut
off with 408 once ``api.body_timeout`` has passed (gateway/api/rsgi_bridge.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from _harness.cluster import Cluster

pytestmark = pytest.mark.fault

BODY_SLOW = 200
HEADER_SLOW = 50
PROBES = 1000


class SlowClients:
    """Raw connections that each send a request a byte at a time, from one thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[socket.socket] = []
        self.headers: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self, bodies: int, headers: int) -> SlowClients:
        for _ in range(bodies):  # whole headers declaring 1,000 bytes, no body yet
            self.bodies.append(self._connect(
                b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n"))
        for _ in range(headers):  # half a request line
            self.headers.append(self._connect(b"POST /apps/1/ev"))
        self._thread.start()
        return self

    def _connect(self, first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(first)
        return sock

    def _trickle(self) -> None:
        while not self._stop.wait(0.2):
            for sock in self.bodies + self.headers:
                try:
                    sock.send(b"{" if sock in self.bodies else b"e")
                except OSError:
                    pass

    def answered(self) -> list[socket.socket]:
        """The body-slow connections the server has answered (or closed) so far."""
        done = []
        for sock in self.bodies:
            sock.setblocking(False)
            try:
                sock.recv(1, socket.MSG_PEEK)
                done.append(sock)
            except BlockingIOError:
                pass
            except OSError:
                done.append(sock)
        return done

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.bodies + self.headers:
            sock.close()


@pytest.fixture
def api_only(cluster_factory) -> Cluster:
    """The API process alone (no node, no worker) with the harness's settings: one worker
    process, eight threads."""
    return cluster_factory(nodes=0, workers=0)


@pytest.fixture
def slow(api_only: Cluster) -> Iterator[SlowClients]:
    clients = SlowClients(api_only.api_port)
    yield clients
    clients.close()


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, int(len(sorted_values) * q + 0.999999) - 1)]


def test_signed_requests_stay_fast_while_slow_clients_hold_connections(api_only, slow):
    sdk = api_only.pusher(timeout=3)
    for i in range(20):  # warm up: connections, the Redis scripts
        sdk.trigger("warm-up", "e", {"i": i})

    slow.open(bodies=BODY_SLOW, headers=HEADER_SLOW)
    time.sleep(1.5)  # every slow request is in the server, the first trickled bytes too
    started = time.monotonic()
    latencies = []
    for i in range(PROBES):
        t0 = time.perf_counter()
        sdk.trigger("probe", "e", {"i": i})
        latencies.append(1000 * (time.perf_counter() - t0))
    elapsed = time.monotonic() - started

    latencies.sort()
    p99 = _percentile(latencies, 0.99)
    assert p99 < 100, f"p99 {p99:.1f} ms (p50 {_percentile(latencies, 0.5):.1f}, " \
                      f"max {latencies[-1]:.1f}) with {BODY_SLOW} slow bodies open"
    # They were served without being cut off early: the default deadline is 10 s.
    assert elapsed < 8 and slow.answered() == []


def _read_response(sock: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Trickle body bytes until the server answers; the response and when it came."""
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            sock.send(b"{")
        except OSError:
            pass
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if data:
            return data, time.monotonic()
    raise AssertionError("no response before the test's deadline")


def _split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_slow_body_is_cut_off_with_408_at_the_deadline(cluster_factory):
    api = cluster_factory(nodes=0, workers=0, api={"body_timeout": 1.0})
    sock = socket.create_connection(("127.0.0.1", api.api_port), timeout=5)
    sock.sendall(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n")
    started = time.monotonic()
    response, answered = _read_response(sock, started + 15)

    status, headers, body = _split(response)
    assert status == 408
    assert 1.0 <= answered - started < 3.0
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": "The request body did not arrive within 1 s.", "code": 408}
    sock.settimeout(5)
    assert sock.recv(100) == b""  # and the connection is closed
    sock.close()

    # The API goes on serving, the same process.
    api.pusher().trigger("after", "e", {})


def test_bodies_over_the_cap_are_refused(api_only):
    limit = api_only.settings.api.max_body_bytes
    declared = socket.create_connection(("127.0.0.1", api_only.api_port), timeout=5)
    # Refused on the declared length alone, before any of the body is sent.
    declared.sendall(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % (limit + 1))
    status, _, body = _split(declared.recv(65536))
    assert status == 413
    assert json.loads(body) == {
        "error": f"Request body too large: the limit is {limit} bytes", "code": 413}
    declared.close()

    chunked = socket.create_connection(("127.0.0.1", api_only.api_port), timeout=5)
    chunked.sendall(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(limit // len(chunk) + 2):
        try:
            chunked.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:  # refused and closed while we were still sending
            break
    status, _, body = _split(chunked.recv(65536))
    assert status == 413
    chunked.close()
