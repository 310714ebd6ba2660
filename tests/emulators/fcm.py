"""A local FCM HTTP v1 emulator: the OAuth token endpoint and ``messages:send``.

Speaks what pyfcm and google-auth send (reference: push-beams-fcm-apns.md section 5.1):

- ``POST /token``: a JWT-bearer grant; the RS256 assertion is checked against the public key
  of the service account the emulator made (:meth:`FcmEmulator.service_account`). A signature
  by any other key gets ``400 invalid_grant`` as Google answers.
- ``POST /v1/projects/{project}/messages:send``: the bearer token must be one it issued; the
  body is checked as FCM does (one target, string ``data`` values, size) and answered with
  Google-style error bodies.

Control (thread-safe, from the test): ``unregistered`` / ``invalid`` / ``foreign`` token sets,
``script(token, *faults)`` to answer the next sends to a token with faults (status, errorCode,
Retry-After, ``hang`` seconds, or ``trickle``: the answer written one byte every so many
seconds, status line and headers included), ``token_fault`` to answer every OAuth token
request that way while it is set, and ``delivered`` (token -> messages accepted).
``exchanges`` records, per faulty answer, when its request arrived and when the client went
away (closed or reset the connection), so a test can tell how long a client held on.

The server is one asyncio (uvloop) event loop in a thread, HTTP/1.1 parsed by httptools (llhttp,
in C), keep-alive: the benchmarks send tens of thousands of requests a second through it, and
the thread-per-connection ``http.server`` it replaces cost twice the worker's CPU per
notification, so the emulator, not the worker, bounded the measured rate.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httptools
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
SEND_RE = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_FAULT_STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class Fault:
    status: int = 503
    code: str | None = None  # FcmError errorCode
    retry_after: str | None = None
    hang: float = 0.0  # seconds to wait before answering (and the answer is then a 503)
    trickle: float = 0.0  # seconds between the bytes of the answer


@dataclass
class Exchange:
    path: str
    arrived: float  # time.monotonic()
    gone: float | None = None  # when the client closed or reset the connection

    @property
    def held(self) -> float | None:
        return None if self.gone is None else self.gone - self.arrived


@dataclass
class Reply:
    """One answer: what to write, and how (after a hang, trickled)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    hang: float = 0.0
    trickle: float = 0.0

    def encode(self) -> bytes:
        head = [
            f"HTTP/1.1 {self.status} {_phrase(self.status)}",
            "Content-Type: application/json; charset=UTF-8",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _rsa_pem() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _reply(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(obj), headers)


def _error(
    status: int,
    google_status: str,
    message: str,
    *,
    code: str | None = None,
    violations: list[dict[str, str]] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM_ERROR, "errorCode": code})
    if violations:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
        )
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details:
        error["details"] = details
    return _reply(status, {"error": error}, headers)


def _not_found() -> Reply:
    return _error(404, "NOT_FOUND", "Requested entity was not found.")


class FcmEmulator:
    def __init__(self, project: str = "clarion-test") -> None:
        self.project = project
        self.key_id = uuid.uuid4().hex
        self.private_pem, self.public_key = _rsa_pem()
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.unregistered: set[str] = set()
        self.invalid: set[str] = set()
        self.foreign: set[str] = set()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.delivered: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.requests: list[dict[str, Any]] = []
        self.oauth_grants = 0
        self.token_fault: Fault | None = None
        self.exchanges: list[Exchange] = []
        self.delay = 0.0  # seconds every send waits before it is answered (slow provider)
        # False: ``delivered`` keeps None per accepted message instead of the message (benchmarks).
        self.record_messages = True
        # Bound now so the port (and the service account naming it) is known before start().
        # A client opening its pool of connections at once (as Google's front end takes them)
        # must not see SYNs dropped: a deep backlog.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None

    # ------------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/projects"

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def service_account(self, *, foreign_key: bool = False) -> str:
        """Service account JSON text; ``foreign_key`` signs with a key the emulator rejects."""
        pem = _rsa_pem()[0] if foreign_key else self.private_pem
        return json.dumps(
            {
                "type": "service_account",
                "project_id": self.project,
                "private_key_id": self.key_id,
                "private_key": pem,
                "client_email": f"clarion@{self.project}.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": self.token_uri,
            }
        )

    def script(self, token: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[token].extend(faults)

    def messages(self, token: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.delivered.get(token, []))

    def start(self) -> FcmEmulator:
        self.thread.start()

        async def serve() -> None:
            self.server = await self.loop.create_server(lambda: _HttpServer(self), sock=self.sock)

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    # ------------------------------------------------------------------ answers

    def answer(self, path: str, authorization: str, raw: bytes) -> Reply:
        """The reply to one POST (faults included), checked in Google's order."""
        if path == "/token":
            fault = self.token_fault
            reply = self.oauth(raw)
            if fault is not None:
                reply.hang, reply.trickle = fault.hang, fault.trickle
            return reply
        match = SEND_RE.match(path)
        if not match:
            return _not_found()
        return self.send(match.group(1), authorization, raw)

    def oauth(self, raw: bytes) -> Reply:
        form = parse_qs(raw.decode())
        assertion = (form.get("assertion") or [""])[0]
        try:
            jwt.decode(
                assertion, self.public_key, algorithms=["RS256"], options={"verify_aud": False}
            )
        except jwt.InvalidTokenError:
            return _reply(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            )
        token = "ya29." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.time() + 3600
            self.oauth_grants += 1
        return _reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def send(self, project: str, authorization: str, raw: bytes) -> Reply:
        if project != self.project:
            return _not_found()
        with self.lock:
            ok = self.tokens.get(authorization.removeprefix("Bearer "), 0) > time.time()
        if not ok:
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        body, problem = _check_message(raw)
        if problem is not None:
            return problem
        message = body["message"]
        token = message.get("token", "")
        with self.lock:
            self.requests.append(message)
            fault = self.faults[token].pop(0) if self.faults.get(token) else None
            state = (
                "unregistered"
                if token in self.unregistered
                else "invalid"
                if token in self.invalid
                else "foreign"
                if token in self.foreign
                else "ok"
            )
        if fault is not None:
            reply = _error(
                fault.status,
                _FAULT_STATUS.get(fault.status, "UNKNOWN"),
                "Injected fault",
                code=fault.code or ("QUOTA_EXCEEDED" if fault.status == 429 else "UNAVAILABLE"),
                headers=(("Retry-After", fault.retry_after),) if fault.retry_after else (),
            )
            reply.hang, reply.trickle = fault.hang, fault.trickle
            return reply
        if state != "ok":
            return _TOKEN_ERRORS[state]()
        if body.get("validate_only"):
            return _reply(200, {"name": f"projects/{project}/messages/fake_message_id"})
        nonce = uuid.uuid4().hex[:16]
        with self.lock:
            self.delivered[token].append(message if self.record_messages else None)
        return _reply(
            200, {"name": f"projects/{project}/messages/0:{time.time_ns() // 1000}%{nonce}"}
        )


_TOKEN_ERRORS = {
    "unregistered": lambda: _error(
        404, "NOT_FOUND", "Requested entity was not found.", code="UNREGISTERED"
    ),
    "invalid": lambda: _error(
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        code="INVALID_ARGUMENT",
    ),
    "foreign": lambda: _error(
        403, "PERMISSION_DENIED", "SenderId mismatch", code="SENDER_ID_MISMATCH"
    ),
}


def _check_message(raw: bytes) -> tuple[dict[str, Any], Reply | None]:
    """The request body, or the 400 FCM answers for its shape."""
    try:
        body = orjson.loads(raw)
        message = body["message"]
    except (ValueError, KeyError, TypeError):
        return {}, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    if not isinstance(body, dict) or not isinstance(message, dict):
        return {}, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    unknown = set(body) - {"message", "validate_only"}
    if unknown:
        return {}, _error(
            400,
            "INVALID_ARGUMENT",
            f"Invalid JSON payload received. Unknown name {unknown.pop()!r}",
        )
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        return {}, _error(400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition")
    for k, v in (message.get("data") or {}).items():
        if not isinstance(v, str):
            return {}, _error(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value at 'message.data[0].value' (TYPE_STRING), {v}",
                violations=[{"field": f"message.data[{k}]", "description": "not a string"}],
            )
    if len(raw) > 4096 + 200:
        return {}, _error(
            400,
            "INVALID_ARGUMENT",
            "Message is too big",
            code="INVALID_ARGUMENT",
            violations=[{"field": "message", "description": "too big"}],
        )
    return body, None


# --------------------------------------------------------------------------- the server


class _HttpServer(asyncio.Protocol):
    """One client connection: requests answered in order; a plain answer is written at once,
    a delayed, hung or trickled one by a task while later requests wait their turn."""

    def __init__(self, emu: FcmEmulator) -> None:
        self.emu = emu
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.gone = asyncio.Event()  # the client closed or reset the connection
        self.queue: deque[tuple[str, str, bytes, bool, float]] = deque()
        self.busy = False
        self._url = b""
        self._auth = b""
        self._name = b""
        self._body: list[bytes] = []

    # asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()

    def eof_received(self) -> bool:
        self.gone.set()
        return False  # close

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    # httptools
    def on_message_begin(self) -> None:
        self._url, self._auth, self._name, self._body = b"", b"", b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self._auth += value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.decode("latin-1").split("?", 1)[0]
        request = (
            path,
            self._auth.decode("latin-1"),
            b"".join(self._body),
            self.parser.should_keep_alive(),
            time.monotonic(),
        )
        self.queue.append(request)
        if not self.busy:
            self._next()

    # answers
    def _next(self) -> None:
        while self.queue and not self.busy:
            path, auth, raw, keep_alive, arrived = self.queue.popleft()
            if self.emu.delay and path != "/token":
                self.busy = True
                self.emu.loop.create_task(self._slow(path, auth, raw, keep_alive, arrived))
                return
            reply = self.emu.answer(path, auth, raw)
            if reply.hang or reply.trickle:
                self.busy = True
                self.emu.loop.create_task(self._faulty(path, reply, keep_alive, arrived))
                return
            self._write(reply.encode(), keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()

    def _done(self) -> None:
        self.busy = False
        self._next()

    async def _slow(
        self, path: str, auth: str, raw: bytes, keep_alive: bool, arrived: float
    ) -> None:
        await asyncio.sleep(self.emu.delay)
        reply = self.emu.answer(path, auth, raw)
        if reply.hang or reply.trickle:
            await self._faulty(path, reply, keep_alive, arrived)
            return
        self._write(reply.encode(), keep_alive)
        self._done()

    async def _faulty(self, path: str, reply: Reply, keep_alive: bool, arrived: float) -> None:
        exchange = Exchange(path, arrived)
        with self.emu.lock:
            self.emu.exchanges.append(exchange)
        if reply.hang and await self._client_gone(reply.hang):
            exchange.gone = time.monotonic()
            self.transport.close()
            return
        if not reply.trickle:
            self._write(reply.encode(), keep_alive)
            self._done()
            return
        data = reply.encode()
        for i in range(len(data)):
            if self.transport.is_closing():
                break
            self.transport.write(data[i : i + 1])
            if await self._client_gone(reply.trickle):
                break
        exchange.gone = time.monotonic()
        self.transport.close()

    async def _client_gone(self, wait: float) -> bool:
        try:
            await asyncio.wait_for(self.gone.wait(), wait)
        except TimeoutError:
            return False
        return True
