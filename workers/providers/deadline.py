"""A total deadline for a blocking HTTP exchange, one that a slow peer cannot stretch.

A socket timeout bounds each read, not the exchange: a peer that sends one byte a second
never trips a 5 s timeout, and http.client reads the status line and headers a line at a time
and the body in chunks, so an answer trickled that way can hold a worker for minutes. Inside
``within(seconds)``, every read made through :class:`DeadlineResponse` waits at most for what
is left of the deadline, and :func:`cap` gives the connect, handshake and send timeouts the
same bound; once the deadline has passed they raise ``TimeoutError``.

The deadline is the calling thread's: a worker thread runs one exchange at a time, and a
connection pooled by requests is read by whichever thread sent the request on it.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


class Deadline:
    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    def left(self) -> float:
        """Seconds left; ``TimeoutError`` once none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


def current() -> Deadline | None:
    return getattr(_local, "deadline", None)


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Bound what runs inside to ``seconds`` (or less, inside an earlier deadline)."""
    outer = current()
    at = time.monotonic() + seconds
    deadline = Deadline(at if outer is None else min(at, outer.at))
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = outer


def cap(timeout: Any) -> Any:
    """``timeout`` (seconds, None or a library's default marker) shortened to what is left of
    the current deadline, if there is one."""
    deadline = current()
    if deadline is None:
        return timeout
    left = deadline.left()
    return min(timeout, left) if isinstance(timeout, int | float) else left


class _DeadlineReader(io.RawIOBase):
    """The socket's own file (it keeps the socket open until the response is done with it, as
    http.client expects), each read bounded by the current deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        deadline = current()
        if deadline is not None:
            self._sock.settimeout(deadline.left())
        return self._raw.readinto(buffer)  # type: ignore[no-any-return]

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class DeadlineResponse(http.client.HTTPResponse):
    """http.client's response (``response_class``) reading through :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()
        self.fp = io.BufferedReader(_DeadlineReader(sock))
