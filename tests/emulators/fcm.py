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
"""

from __future__ import annotations

import json
import re
import secrets
import select
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
SEND_RE = re.compile(r"^/v1/projects/([^/]+)/messages:send$")


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


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a client opening its pool of connections at once
    # (as Google's front end takes them) would see SYNs dropped and connects stall for seconds.
    request_queue_size = 512


def _rsa_pem() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


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
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ server

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.arrived = time.monotonic()
                self.trickle = 0.0
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/token":
                    fault = emu.token_fault
                    if fault is not None and fault.hang and self._hang(fault.hang):
                        return None
                    self.trickle = fault.trickle if fault is not None else 0.0
                    return self._oauth(raw)
                match = SEND_RE.match(self.path)
                if not match:
                    return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                return self._send(match.group(1), raw)

            def _oauth(self, raw: bytes) -> None:
                form = parse_qs(raw.decode())
                assertion = (form.get("assertion") or [""])[0]
                try:
                    jwt.decode(
                        assertion,
                        emu.public_key,
                        algorithms=["RS256"],
                        options={"verify_aud": False},
                    )
                except jwt.InvalidTokenError:
                    return self._reply(
                        400,
                        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
                    )
                token = "ya29." + secrets.token_urlsafe(24)
                with emu.lock:
                    emu.tokens[token] = time.time() + 3600
                    emu.oauth_grants += 1
                self._reply(
                    200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
                )

            def _send(self, project: str, raw: bytes) -> None:
                if project != emu.project:
                    return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                auth = self.headers.get("Authorization", "")
                with emu.lock:
                    ok = emu.tokens.get(auth.removeprefix("Bearer "), 0) > time.time()
                if not ok:
                    return self._error(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials.",
                    )
                try:
                    body = json.loads(raw)
                    message = body["message"]
                except (ValueError, KeyError, TypeError):
                    return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
                unknown = set(body) - {"message", "validate_only"}
                if unknown:
                    return self._error(
                        400,
                        "INVALID_ARGUMENT",
                        f"Invalid JSON payload received. Unknown name {unknown.pop()!r}",
                    )
                targets = [k for k in ("token", "topic", "condition") if k in message]
                if len(targets) != 1:
                    return self._error(
                        400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition"
                    )
                for k, v in (message.get("data") or {}).items():
                    if not isinstance(v, str):
                        return self._error(
                            400,
                            "INVALID_ARGUMENT",
                            f"Invalid value at 'message.data[0].value' (TYPE_STRING), {v}",
                            violations=[
                                {"field": f"message.data[{k}]", "description": "not a string"}
                            ],
                        )
                if len(raw) > 4096 + 200:
                    return self._error(
                        400,
                        "INVALID_ARGUMENT",
                        "Message is too big",
                        code="INVALID_ARGUMENT",
                        violations=[{"field": "message", "description": "too big"}],
                    )
                token = message.get("token", "")
                if emu.delay:
                    time.sleep(emu.delay)
                with emu.lock:
                    emu.requests.append(message)
                    fault = emu.faults[token].pop(0) if emu.faults.get(token) else None
                    state = (
                        "unregistered"
                        if token in emu.unregistered
                        else "invalid"
                        if token in emu.invalid
                        else "foreign"
                        if token in emu.foreign
                        else "ok"
                    )
                if fault is not None:
                    if fault.hang and self._hang(fault.hang):
                        return None
                    self.trickle = fault.trickle
                    statuses = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
                    headers = [("Retry-After", fault.retry_after)] if fault.retry_after else []
                    return self._error(
                        fault.status,
                        statuses.get(fault.status, "UNKNOWN"),
                        "Injected fault",
                        code=fault.code
                        or ("QUOTA_EXCEEDED" if fault.status == 429 else "UNAVAILABLE"),
                        headers=headers,
                    )
                if state == "unregistered":
                    return self._error(
                        404, "NOT_FOUND", "Requested entity was not found.", code="UNREGISTERED"
                    )
                if state == "invalid":
                    return self._error(
                        400,
                        "INVALID_ARGUMENT",
                        "The registration token is not a valid FCM registration token",
                        code="INVALID_ARGUMENT",
                    )
                if state == "foreign":
                    return self._error(
                        403, "PERMISSION_DENIED", "SenderId mismatch", code="SENDER_ID_MISMATCH"
                    )
                if body.get("validate_only"):
                    return self._reply(
                        200, {"name": f"projects/{project}/messages/fake_message_id"}
                    )
                nonce = uuid.uuid4().hex[:16]
                with emu.lock:
                    emu.delivered[token].append(message if emu.record_messages else None)
                self._reply(
                    200,
                    {"name": f"projects/{project}/messages/0:{time.time_ns() // 1000}%{nonce}"},
                )

            def _error(
                self,
                status: int,
                google_status: str,
                message: str,
                *,
                code: str | None = None,
                violations: list[dict[str, str]] | None = None,
                headers: list[tuple[str, str]] = (),
            ) -> None:
                details: list[dict[str, Any]] = []
                if code:
                    details.append({"@type": FCM_ERROR, "errorCode": code})
                if violations:
                    details.append(
                        {
                            "@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": violations,
                        }
                    )
                error: dict[str, Any] = {
                    "code": status,
                    "message": message,
                    "status": google_status,
                }
                if details:
                    error["details"] = details
                self._reply(status, {"error": error}, headers)

            def _hang(self, seconds: float) -> bool:
                """No answer for ``seconds``; True if the client went away meanwhile."""
                exchange = self._exchange()
                if not self._client_gone(seconds):
                    return False
                exchange.gone = time.monotonic()
                self.close_connection = True
                return True

            def _exchange(self) -> Exchange:
                exchange = Exchange(self.path, self.arrived)
                with emu.lock:
                    emu.exchanges.append(exchange)
                return exchange

            def _client_gone(self, wait: float) -> bool:
                readable, _, _ = select.select([self.connection], [], [], wait)
                try:
                    return bool(readable) and self.connection.recv(1024) == b""
                except ConnectionError:
                    return True

            def _trickle(self, status: int, data: bytes, headers: Any) -> None:
                exchange = self._exchange()
                head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                        "Content-Type: application/json; charset=UTF-8",
                        f"Content-Length: {len(data)}",
                        *(f"{name}: {value}" for name, value in headers)]
                answer = ("\r\n".join(head) + "\r\n\r\n").encode() + data
                for i in range(len(answer)):
                    try:
                        self.connection.sendall(answer[i : i + 1])
                    except OSError:
                        break
                    if self._client_gone(self.trickle):
                        break
                exchange.gone = time.monotonic()
                self.close_connection = True

            def _reply(self, status: int, obj: Any, headers: Any = ()) -> None:
                data = json.dumps(obj).encode()
                if self.trickle:
                    return self._trickle(status, data, headers)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
