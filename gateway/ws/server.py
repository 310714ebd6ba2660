"""The picows side: route each HTTP request on the port to a listener or a plain response.

- ``GET /ready``: 200 JSON ``{"status": "ok", "node", "connections"}``; 503 with
  ``"status": "shutting_down"``, or ``"unavailable"`` and an ``"error"`` saying why while Redis
  cannot be reached (gateway/ws/readiness.py).
- ``/app/{key}?protocol=7&client=js&version=...``: a Pusher connection, or a refusal that is
  still upgraded so the client can read the Pusher error (4001, 4003, 4004, 4007, 4009
  for an Origin the app does not allow, and 4100 while the node drains).
- any other WebSocket path: refused with 4005; any other plain request: 404.

Requests under ``/pusher/`` (pusher-js's HTTP transports) never reach picows: the port switch
(gateway/ws/portswitch.py) hands them to gateway/ws/xhr, which asks ``Router.refusal`` the same
questions before it opens a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import orjson
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from config.settings import AppSettings
from gateway.protocol import frames
from gateway.protocol.errors import (
    AppDisabled,
    AppNotFound,
    ConnectionError_,
    Draining,
    OverConnectionQuota,
    PathNotFound,
    Unauthorized,
    UnsupportedProtocol,
)
from gateway.ws import framing
from gateway.ws.connection import Connection
from gateway.ws.context import CLOSE_TIMEOUT, NodeContext

SUPPORTED_PROTOCOLS = range(5, 8)
APP_PREFIX = "/app/"
JSON_HEADERS = {"Content-Type": "application/json"}


class Refusal(WSListener):
    """Upgrades, sends ``pusher:error`` and closes with its code: pusher-js only reads close
    codes, pysher only error frames, and neither sees an HTTP error body."""

    __slots__ = ("error", "transport")

    def __init__(self, error: ConnectionError_) -> None:
        super().__init__()
        self.error = error

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        err = self.error
        transport.underlying_transport.write(
            framing.text(frames.from_error(err)) + framing.close(err.code or 1000, err.message)
        )
        # Wait for the client's close frame (clean handshake), but not forever.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.disconnect, False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()


class Router:
    """The picows listener factory."""

    def __init__(self, ctx: NodeContext, is_ready: Callable[[], bool],
                 not_ready: Callable[[], str | None] = lambda: None) -> None:
        self.ctx = ctx
        # Whether new connections are taken (False once draining: 4100, see Draining).
        self.is_ready = is_ready
        # Why /ready should steer clients elsewhere (None: it should not).
        self.not_ready = not_ready
        # HTTP fallback sessions held (open or just closed), shown on /ready (set by the node).
        self.http_sessions: Callable[[], int] | None = None

    def __call__(self, request: WSUpgradeRequest) -> object:
        target = urlsplit(request.path.decode("latin-1"))
        path = target.path.rstrip("/") or "/"
        if path.startswith(APP_PREFIX):
            return self._pusher(path[len(APP_PREFIX):], target.query, request)
        if path == "/ready" and request.method == b"GET":
            return self._ready()
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return Refusal(PathNotFound())
        body = orjson.dumps({"error": "Not found", "code": 404})
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(404, body, JSON_HEADERS), None
        )

    def _ready(self) -> WSUpgradeResponseWithListener:
        if not self.is_ready():
            problem: str | None = "shutting down"
            info: dict[str, object] = {"status": "shutting_down"}
        else:
            problem = self.not_ready()
            info = {"status": "ok" if problem is None else "unavailable"}
        if problem is not None:
            info.update(error=problem, code=503)
        info.update(node=self.ctx.node_id, connections=len(self.ctx.hub.connections))
        if self.http_sessions is not None:
            info["http_sessions"] = self.http_sessions()
        body = orjson.dumps({**info, "delivery": self._delivery_counts()})
        if problem is None:
            response = WSUpgradeResponse.create_ok_response(body, JSON_HEADERS)
        else:
            response = WSUpgradeResponse.create_error_response(503, body, JSON_HEADERS)
        return WSUpgradeResponseWithListener(response, None)

    def _delivery_counts(self) -> dict[str, int]:
        """Since the node started: doorbells rung twice, events filled from the logs, and
        gaps the logs could not fill (docs/reliability.md)."""
        seq = self.ctx.hub.sequencer
        if seq is None:
            return {}
        return {"duplicates": seq.duplicates, "filled_from_log": seq.filled, "gaps": seq.gaps}

    def app_by_key(self, key: str) -> AppSettings | None:
        apps = self.ctx.apps
        return apps.by_key(key) if apps is not None else self.ctx.settings.app_by_key(key)

    def _pusher(self, key: str, query: str, request: WSUpgradeRequest) -> WSListener:
        error = self.refusal(key, parse_qs(query), request.headers.get("Origin"))
        if error is not None:
            return Refusal(error)
        app = self.app_by_key(key)
        assert app is not None
        return Connection(self.ctx, app, self.ctx.new_socket_id())

    def refusal(self, key: str, params: dict[str, list[str]],
                origin: str | None) -> ConnectionError_ | None:
        """Why a new connection to app ``key`` is refused (None: it is not)."""
        if not self.is_ready():
            return Draining()
        app = self.app_by_key(key)
        if app is None:
            return AppNotFound(f"Application does not exist: no app with key {key[:64]!r}")
        if not app.enabled:
            return AppDisabled()
        if app.allowed_origins:
            if not origin_allowed(origin, app.allowed_origins):
                return Unauthorized(f"Origin not allowed: {str(origin)[:100]}")
        if not _protocol_supported(params.get("protocol")):
            return UnsupportedProtocol(
                f"Unsupported protocol version {params['protocol'][0][:16]!r}: use 5, 6 or 7"
            )
        # The local count alone is over: refuse at once. The cluster-wide count is checked by
        # the connection before connection_established (gateway/ws/quota.py).
        if app.max_connections is not None and (
            self.ctx.hub.app_counts[app.id] >= app.max_connections
        ):
            return OverConnectionQuota()
        return None


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Whether a browser ``Origin`` matches one of ``allowed``: ``*`` (any), a full origin
    (``https://app.example``, scheme and port compared), or a host name, optionally with a
    ``*.`` wildcard for sub-domains (``*.example.com``). No Origin header matches only ``*``:
    an app that lists origins wants browsers from them, and every browser sends one."""
    if "*" in allowed:
        return True
    if not origin or origin == "null":
        return False
    origin = origin.strip().lower().rstrip("/")
    host = (urlsplit(origin).hostname or "") if "://" in origin else origin
    for entry in allowed:
        entry = entry.strip().lower().rstrip("/")
        if "://" in entry:
            if entry == origin:
                return True
        elif entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif entry == host:
            return True
    return False


def _protocol_supported(values: list[str] | None) -> bool:
    # A missing protocol is taken as 7: old clients omit it, and refusing helps nobody.
    if not values:
        return True
    try:
        return int(values[0]) in SUPPORTED_PROTOCOLS
    except ValueError:
        return False
