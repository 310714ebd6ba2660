"""The node's HTTP fallback sessions: each /pusher request routed, sessions held by id, limits,
and the sweep that keeps them alive or reaps them (docs/http-fallback.md).

* ``POST .../xhr_streaming`` and ``POST .../xhr`` (receive): the first one for a session id
  opens it, after the same checks as a WebSocket upgrade (``Router.refusal``: a refusal is told
  in the protocol, as ``o``, the ``pusher:error`` and ``c[code,...]``, which is what pusher-js
  acts on); later ones become its receiver.
* ``POST .../xhr_send``: the body's messages go to the session's Connection; 204.
* ``OPTIONS``: the CORS preflight browsers send before each of them (pusher-js sets a JSON
  Content-Type, so every cross-origin request is preflighted).

Errors are plain HTTP with a JSON body: 404 (no such session, or a path that is not ours), 405,
410 (the session is closed), 400 (a body that is not a JSON array of strings), 413 (too large),
403 (an Origin the app does not allow), 429 (too many sessions from one address). A closed
session is kept for ``http_session_timeout`` so that its client's next request learns how it
closed (``c[...]``), then forgotten.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs

import structlog

from gateway.protocol import frames
from gateway.ws.connection import Connection
from gateway.ws.context import NodeContext
from gateway.ws.server import Router, origin_allowed
from gateway.ws.xhr import wire
from gateway.ws.xhr.http11 import Headers, HttpConnection, Request, error_body
from gateway.ws.xhr.session import HttpSession

log = structlog.get_logger("clarion.ws.xhr")

# pusher-js's heartbeat interval is the server's: ``h`` on a receiver that carried nothing for
# this long (at most the activity timeout, so pusher-js's own activity check never fires).
HEARTBEAT = 25.0
_TOKEN_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~ ,-]{0,512}$")


class HttpSessions:
    def __init__(self, ctx: NodeContext, router: Router) -> None:
        self.ctx = ctx
        self.router = router
        ws = ctx.settings.websocket
        self.timeout = ws.http_session_timeout
        self.per_ip_limit = ws.http_sessions_per_ip
        self.heartbeat = min(HEARTBEAT, float(ws.activity_timeout))
        # The largest request body: one message of max_frame_bytes, JSON-quoted in an array.
        self.max_body = 2 * ws.max_frame_bytes + 1024
        self.sessions: dict[tuple[str, str], HttpSession] = {}
        self.per_ip: Counter[str] = Counter()
        self._closed_at: dict[tuple[str, str], float] = {}
        self._reframe = wire.Reframer()

    def __len__(self) -> int:
        return len(self.sessions)

    def connection(self) -> HttpConnection:
        """The protocol of a TCP connection whose first request is under /pusher/."""
        return HttpConnection(self.handle, self.max_body)

    # ----------------------------------------------------------------- requests

    def handle(self, request: Request, http: HttpConnection) -> None:
        headers = _cors(request)
        target = wire.parse_target(request.path)
        if request.method == "OPTIONS":
            http.respond(HTTPStatus.NO_CONTENT, b"", headers + _preflight(request))
        elif target is None:
            _error(http, headers, HTTPStatus.NOT_FOUND, "Not found: expected "
                   f"{wire.HTTP_PATH}/app/{{key}}/{{server}}/{{session}}/xhr_streaming, xhr "
                   "or xhr_send.")
        elif request.method != "POST":
            _error(http, headers + [("Allow", "POST, OPTIONS")],
                   HTTPStatus.METHOD_NOT_ALLOWED, "Use POST.")
        elif target.receives:
            self._receive(target, request, http, headers)
        else:
            self._send(target, request, http, headers)

    def _receive(self, target: wire.Target, request: Request, http: HttpConnection,
                 headers: Headers) -> None:
        key = (target.key, target.session)
        session = self.sessions.get(key)
        if session is None:
            session = self._open(key, target, request, http, headers)
            if session is None:
                return
        session.attach(http, target.kind == "xhr_streaming", headers, _now())

    def _open(self, key: tuple[str, str], target: wire.Target, request: Request,
              http: HttpConnection, headers: Headers) -> HttpSession | None:
        error = self.router.refusal(target.key, parse_qs(request.query),
                                    request.headers.get("origin"))
        if error is not None:
            body = (wire.OPEN + wire.messages_line([frames.from_error(error)])
                    + wire.close_line(error.code or 1000, error.message))
            http.respond(HTTPStatus.OK, body, headers)
            return None
        if self.per_ip[request.peer] >= self.per_ip_limit:
            _error(http, headers + [("Retry-After", "10")], HTTPStatus.TOO_MANY_REQUESTS,
                   f"Too many sessions from this address (at most {self.per_ip_limit}).")
            return None
        app = self.router.app_by_key(target.key)
        assert app is not None
        conn = Connection(self.ctx, app, self.ctx.new_socket_id())
        session = HttpSession(key, request.peer, conn, self, self._reframe, _now())
        self.sessions[key] = session
        self.per_ip[request.peer] += 1
        conn.attach(session, session)
        return session

    def _send(self, target: wire.Target, request: Request, http: HttpConnection,
              headers: Headers) -> None:
        session = self.sessions.get((target.key, target.session))
        if session is None:
            _error(http, headers, HTTPStatus.NOT_FOUND, "No such session.")
            return
        if session.closed:
            _error(http, headers, HTTPStatus.GONE, "The session is closed.")
            return
        app = session.conn.app
        if app.allowed_origins and not origin_allowed(request.headers.get("origin"),
                                                      app.allowed_origins):
            _error(http, headers, HTTPStatus.FORBIDDEN, "Origin not allowed.")
            return
        try:
            messages = wire.parse_send(request.body)
        except wire.BadBody as exc:
            _error(http, headers, HTTPStatus.BAD_REQUEST, str(exc))
            return
        limit = self.ctx.settings.websocket.max_frame_bytes
        if any(len(m) > limit for m in messages):
            _error(http, headers, HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                   f"A message is larger than {limit} bytes.")
            return
        session.receive(messages)
        http.respond(HTTPStatus.NO_CONTENT, b"", headers)

    # ----------------------------------------------------------------- lifecycle

    def closed(self, session: HttpSession) -> None:
        """A session finished: it stays as a tombstone until the sweep forgets it."""
        self._closed_at[session.key] = _now()
        self.per_ip[session.peer] -= 1
        if self.per_ip[session.peer] <= 0:
            del self.per_ip[session.peer]

    async def run(self, halted: Callable[[float], Awaitable[bool]]) -> None:
        """The sweep: heartbeats, reaping, tombstones forgotten."""
        tick = max(0.05, min(1.0, self.heartbeat / 4, self.timeout / 4))
        while not await halted(tick):
            self.sweep(_now())

    def sweep(self, now: float) -> None:
        for session in list(self.sessions.values()):
            try:
                session.tick(now, self.heartbeat, self.timeout)
            except Exception:
                log.exception("http_session_tick_failed", socket_id=session.conn.socket_id)
        for key, at in list(self._closed_at.items()):
            if now - at >= self.timeout:
                del self._closed_at[key]
                self.sessions.pop(key, None)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _cors(request: Request) -> Headers:
    """Every answer: pusher-js reads them cross-origin (no credentials), never cached."""
    headers = [("Content-Type", "application/javascript; charset=UTF-8"),
               ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")]
    origin = request.headers.get("origin")
    if origin:
        headers += [("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")]
    else:
        headers.append(("Access-Control-Allow-Origin", "*"))
    return headers


def _preflight(request: Request) -> Headers:
    asked = request.headers.get("access-control-request-headers", "")
    allowed = asked if asked and _TOKEN_LIST.match(asked) else "Content-Type"
    return [("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", allowed), ("Access-Control-Max-Age", "86400")]


def _error(http: HttpConnection, headers: Headers, status: int, message: str) -> None:
    json = [(n, v) for n, v in headers if n != "Content-Type"]
    http.respond(status, error_body(status, message), json + [("Content-Type",
                                                                 "application/json")])
