"""A local Web Push service (RFC 8030) that checks what a browser's push service checks and
decrypts what the browser would: the VAPID token (RFC 8292: ``Authorization: vapid t=JWT,
k=KEY``, ES256 by ``k``, ``k`` the key the subscription was made with, ``aud`` this origin,
``exp`` within 24 h, ``sub`` a mailto:/https: contact), the ``TTL`` header, and the aes128gcm
body (RFC 8188/8291), opened with the subscription's private key and auth secret (http_ece).

``subscribe(vapid_public_key)`` makes a subscription as ``pushManager.subscribe`` would (a
P-256 key pair and a 16-byte auth secret held here); ``token(sub)`` is what the Beams web SDK
registers (base64 of its JSON). Control (thread-safe): ``gone`` (answer 410), ``script(sub_id,
*faults)`` for the next sends, ``delivered`` (sub id -> decrypted payloads, parsed JSON) and
``refused`` (the reason of each refused request).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PATH_RE = re.compile(r"^/push/([A-Za-z0-9_-]+)$")
VAPID_RE = re.compile(r"^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$")


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None


@dataclass
class _Subscription:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    vapid_key: str  # the applicationServerKey it was made with (base64url)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Server(ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True


class WebPushEmulator:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subs: dict[str, _Subscription] = {}
        self.gone: set[str] = set()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.delivered: dict[str, list[Any]] = defaultdict(list)
        self.refused: list[str] = []
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebPushEmulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def subscribe(self, vapid_public_key: str) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        sub_id = secrets.token_urlsafe(16)
        auth = secrets.token_bytes(16)
        with self.lock:
            self.subs[sub_id] = _Subscription(key, auth, vapid_public_key)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": f"{self.origin}/push/{sub_id}", "expirationTime": None,
                "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    @staticmethod
    def sub_id(subscription: dict[str, Any]) -> str:
        return subscription["endpoint"].rsplit("/", 1)[1]

    @staticmethod
    def token(subscription: dict[str, Any]) -> str:
        """What the web SDK registers: ``btoa(JSON.stringify(subscription))``."""
        return base64.b64encode(json.dumps(subscription).encode()).decode()

    def script(self, sub_id: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[sub_id].extend(faults)

    def messages(self, sub_id: str) -> list[Any]:
        with self.lock:
            return list(self.delivered.get(sub_id, []))

    # ------------------------------------------------------------------ checks

    def check_vapid(self, header: str, sub: _Subscription) -> str | None:
        """None if the Authorization header is a valid VAPID token for ``sub``, else why not."""
        match = VAPID_RE.match(header.strip())
        if not match:
            return "no vapid Authorization header"
        token, k = match.groups()
        if k != sub.vapid_key:
            return "k is not the key the subscription was made with"
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(k))
            claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.origin,
                                options={"require": ["aud", "exp", "sub"]})
        except (ValueError, jwt.InvalidTokenError) as exc:
            return f"bad VAPID JWT: {exc}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "exp more than 24 hours ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "sub is not a mailto: or https: URL"
        return None

    # ------------------------------------------------------------------ server

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = PATH_RE.match(self.path)
                with emu.lock:
                    sub = emu.subs.get(match.group(1)) if match else None
                    sub_id = match.group(1) if match else ""
                    gone = sub_id in emu.gone
                    fault = emu.faults[sub_id].pop(0) if emu.faults.get(sub_id) else None
                if sub is None:
                    return self._answer(404, "no such subscription")
                if gone:
                    return self._answer(410, "subscription expired or unsubscribed")
                if fault is not None:
                    return self._answer(fault.status, "injected fault", fault.retry_after)
                why = emu.check_vapid(self.headers.get("Authorization", ""), sub)
                if why is not None:
                    return self._refuse(403, why)
                if not (self.headers.get("TTL") or "").isdigit():
                    return self._refuse(400, "missing or bad TTL header")
                if self.headers.get("Content-Encoding") != "aes128gcm":
                    return self._refuse(400, "Content-Encoding is not aes128gcm")
                try:
                    plain = http_ece.decrypt(body, private_key=sub.private_key,
                                             auth_secret=sub.auth, version="aes128gcm")
                    payload = json.loads(plain)
                except Exception as exc:  # noqa: BLE001 - anything undecryptable is a 400
                    return self._refuse(400, f"cannot decrypt: {type(exc).__name__}: {exc}")
                with emu.lock:
                    emu.delivered[sub_id].append(
                        {"payload": payload, "ttl": int(self.headers["TTL"])})
                self._answer(201, "")

            def _refuse(self, status: int, why: str) -> None:
                with emu.lock:
                    emu.refused.append(why)
                self._answer(status, why)

            def _answer(self, status: int, text: str, retry_after: str | None = None) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

        return Handler
