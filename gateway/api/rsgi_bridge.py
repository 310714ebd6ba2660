"""Serve the Flask (WSGI) app over granian's RSGI interface, so a slow client holds no thread.

Under granian's WSGI interface the app reads the request body on one of the worker's few
blocking threads, with no time limit: a client that declares a body and sends it a byte at a
time holds that thread as long as it likes, and ``api.workers x api.threads`` such clients
stall the whole API. Here the body is read first, by granian's async I/O (no thread, no GIL
while bytes trickle in), under two limits:

- a size cap, ``api.max_body_bytes``: a declared ``Content-Length`` over it is refused (413)
  before a byte is read; a body without one (chunked, HTTP/2) is cut off once it passes it;
- a deadline, ``api.body_timeout`` seconds for the whole body, checked by one sweep a second
  rather than a timer per request (a timer costs ~7 us a request, the sweep < 1 us): past
  it the request is answered 408 and the connection closed.

Only a complete request reaches the Flask app, which then runs at once on the worker's event
loop thread. Not on a thread pool: the hand-offs between the loop, the pool and granian's own
thread cost about 130 us of CPU a request (measured, docs/api-server.md), a quarter of what
the whole request costs, and the app's work is short Redis round trips. Refusals have the
API's JSON shape ``{"error": ..., "code": ...}``.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gateway.protocol.errors import ApiError, BadRequest, PayloadTooLarge, RequestTimeout

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]

# The parts of the environ that are the same for every request.
_BASE_ENVIRON: dict[str, Any] = {
    "SCRIPT_NAME": "",
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    # The body is complete before the app sees it: werkzeug may read to the end.
    "wsgi.input_terminated": True,
}
# Header name (lower case, as granian gives it) -> environ key; bounded, see _environ_key.
_ENVIRON_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_MAX_ENVIRON_KEYS = 256
_JSON = [("content-type", "application/json")]


class BodyDeadlines:
    """Body reads in progress and when each started; ``sweep`` cancels the overdue ones."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()

    def sweep(self, now: float) -> None:
        cutoff = now - self.timeout
        for task, started in list(self.reading.items()):
            if started <= cutoff:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by a sweep (then it is no longer cancelling)."""
        if task not in self.expired:
            return False
        self.expired.discard(task)
        task.uncancel()
        return True


class RsgiBridge:
    """An RSGI application (granian calls ``__rsgi__``) serving a WSGI app."""

    def __init__(self, app: WsgiApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.deadlines = BodyDeadlines(body_timeout)
        # How often the deadlines are checked: a body is cut off within this much of its
        # deadline.
        self.sweep_every = min(1.0, body_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ granian's hooks

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._schedule_sweep(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        try:
            body = await self.read_body(scope, protocol)
        except ApiError as refusal:
            protocol.response_bytes(refusal.status, _refusal_headers(refusal),
                                    orjson.dumps(refusal.body()))
            return
        protocol.response_bytes(*self.call(wsgi_environ(scope, body)))

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(self.sweep_every, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.deadlines.sweep(time.monotonic())
        self._schedule_sweep(loop)

    # ------------------------------------------------------------------ the body

    async def read_body(self, scope: Any, protocol: Any) -> bytes:
        """The whole request body, within the size cap and the deadline (else ApiError)."""
        headers = scope.headers
        declared = headers.get("content-length")
        if declared is None:
            if scope.http_version != "2" and "transfer-encoding" not in headers:
                return b""  # HTTP/1 without either header: no body (RFC 9112, 6.3)
            return await self._within_deadline(self._capped_chunks(protocol))
        if _length(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        if declared == "0":
            return b""
        return await self._within_deadline(protocol())

    async def _within_deadline(self, read: Any) -> bytes:
        task = asyncio.current_task()
        assert task is not None
        deadlines = self.deadlines
        deadlines.reading[task] = time.monotonic()
        try:
            return await read  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if deadlines.timed_out(task):
                raise RequestTimeout(
                    f"The request body did not arrive within {deadlines.timeout:g} s."
                ) from None
            raise
        except ApiError:
            raise
        except Exception:  # the client went away, or sent a malformed body
            raise BadRequest("The request body could not be read.") from None
        finally:
            deadlines.reading.pop(task, None)

    async def _capped_chunks(self, protocol: Any) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in protocol:
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            parts.append(chunk)
        return b"".join(parts)

    # ------------------------------------------------------------------ the app

    def call(self, environ: dict[str, Any]) -> tuple[int, Headers, bytes]:
        """Run the WSGI app; its status, headers and whole body."""
        started: list[Any] = []

        def start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
            started[:] = (status, headers)
            return _unsupported_write

        result = self.app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return int(started[0][:3]), started[1], content


def wsgi_environ(scope: Any, body: bytes) -> dict[str, Any]:
    """The environ granian's own WSGI interface would build for this request."""
    server_name, _, server_port = scope.server.rpartition(":")
    environ = _BASE_ENVIRON.copy()
    environ.update({
        "REQUEST_METHOD": scope.method,
        # PEP 3333: the decoded path's bytes as latin-1 (scope.path is decoded as UTF-8).
        "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "SERVER_NAME": server_name.strip("[]"),
        "SERVER_PORT": server_port,
        "REMOTE_ADDR": scope.client.rpartition(":")[0].strip("[]"),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
    })
    for name, value in scope.headers.items():
        key = _ENVIRON_KEYS.get(name) or _environ_key(name)
        if key in environ:  # a repeated header: one value, as WSGI servers join them
            value = environ[key] + (";" if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    if body or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(len(body))
    if "HTTP_HOST" not in environ and scope.authority:
        environ["HTTP_HOST"] = scope.authority
    return environ


def _environ_key(name: str) -> str:
    key = "HTTP_" + name.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _MAX_ENVIRON_KEYS:  # clients choose header names: stay bounded
        _ENVIRON_KEYS[name] = key
    return key


def _length(declared: str) -> int:
    try:
        return int(declared)
    except ValueError:
        raise BadRequest("Invalid Content-Length.") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")


def _refusal_headers(refusal: ApiError) -> Headers:
    return _JSON + [(name.lower(), value) for name, value in refusal.headers.items()]


def _unsupported_write(data: bytes) -> None:
    raise NotImplementedError("write() is not supported: return the body instead")
