"""HTTP receivers that misbehave at the socket level, for webhook deadline tests.

``SlowPeer(mode)`` listens on 127.0.0.1 (optionally behind TLS) and, for each connection:

- ``trickle``: reads the request, then writes a valid ``200`` answer one byte every
  ``interval`` seconds, status line and headers included (padded so that it would take
  minutes);
- ``trickle_body``: the status line and headers at once, then a long body one byte every
  ``interval`` seconds;
- ``hang``: reads the request and never answers;
- ``stall``: accepts the connection and never reads nor writes (with ``tls``, the handshake
  never completes);
- ``blackhole``: never accepts; its listen queue is kept full, so a connect attempt gets no
  answer at all (SYNs are dropped, as behind a firewall that drops packets).

Each connection becomes an :class:`Exchange` with the time it was accepted and the time the
client went away (EOF or reset), so a test can tell how long a client held on.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass

MODES = ("trickle", "trickle_body", "hang", "stall", "blackhole")
PAD = "X-Pad: " + "." * 200 + "\r\n"


@dataclass
class Exchange:
    accepted: float
    request: bytes = b""
    closed: float | None = None
    sent: int = 0

    @property
    def held(self) -> float | None:
        """Seconds from accept to the client going away (None while it holds on)."""
        return None if self.closed is None else self.closed - self.accepted


class SlowPeer:
    def __init__(self, mode: str, interval: float = 1.0,
                 tls: ssl.SSLContext | None = None) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.interval = interval
        self.tls = tls
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=0 if mode == "blackhole" else 64)
        self.port = self.sock.getsockname()[1]
        self._fillers: list[socket.socket] = []
        if mode == "blackhole":
            self._fill_listen_queue()
        else:
            threading.Thread(target=self._accept_loop, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def open_count(self) -> int:
        """Connections a client still holds open."""
        with self._lock:
            return sum(1 for e in self.exchanges if e.closed is None)

    def finished(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.closed is not None]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for s in self._fillers:
            s.close()

    # ------------------------------------------------------------------ server

    def _fill_listen_queue(self) -> None:
        """Connect until a connect times out: from then on the kernel drops new SYNs."""
        for _ in range(8):
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", self.port))
            except TimeoutError:
                s.close()
                return
            self._fillers.append(s)
        raise AssertionError("could not fill the listen queue")

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            exchange = Exchange(time.monotonic())
            with self._lock:
                self.exchanges.append(exchange)
            threading.Thread(target=self._serve, args=(conn, exchange), daemon=True).start()

    def _serve(self, conn: socket.socket, exchange: Exchange) -> None:
        try:
            if self.mode == "stall":
                self._wait_for_eof(conn)
                return
            if self.tls is not None:
                conn.settimeout(30)
                conn = self.tls.wrap_socket(conn, server_side=True)
            exchange.request = self._read_request(conn)
            if self.mode == "trickle":
                self._trickle(conn, exchange, self._answer(b"ok"))
            elif self.mode == "trickle_body":
                body = b"." * 10_000
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                conn.sendall(head)
                self._trickle(conn, exchange, body)
            else:  # hang
                self._wait_for_eof(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            exchange.closed = exchange.closed or time.monotonic()
            conn.close()

    @staticmethod
    def _answer(body: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\n{PAD * 5}Content-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("client closed before sending a request")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _trickle(self, conn: socket.socket, exchange: Exchange, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.is_set():
                return
            conn.sendall(data[i : i + 1])
            exchange.sent += 1
            if self._client_gone(conn, self.interval):
                exchange.closed = time.monotonic()
                return

    def _wait_for_eof(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            if self._client_gone(conn, 0.05):
                return

    @staticmethod
    def _client_gone(conn: socket.socket, wait: float) -> bool:
        """Wait up to ``wait`` seconds; True if the client closed or reset meanwhile."""
        readable, _, _ = select.select([conn], [], [], wait)
        if not readable:
            return False
        try:
            return conn.recv(4096) == b""
        except ssl.SSLError:
            return True
        except ConnectionError:
            return True
