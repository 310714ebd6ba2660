"""A local APNs emulator: HTTP/2 over TLS (raw ``h2``), token (JWT ES256) authentication.

Framing follows Apple and what aioapns needs (reference: push-beams-fcm-apns.md section 5.2):
a 200 is one HEADERS frame with END_STREAM and the ``apns-id`` echoed byte for byte; an error is
HEADERS then exactly one DATA frame with the whole JSON ``{"reason"[, "timestamp"]}``.

TLS uses a CA made at test time (trustme, on top of cryptography); ``ca_file`` is what the
gateway's ``push.apns_ca_file`` should name. The emulator makes the P-256 key the app
configures as its .p8 (``key_pem``), and accepts only tokens signed by it with the right
``kid`` and team.

Control (thread-safe): ``unregistered`` (-> 410), ``wrong_topic`` (-> 400
DeviceTokenNotForTopic) token sets, ``script(token, *faults)`` for the next sends to a token
(status + reason, answered after ``delay`` seconds, a 200 being a delivery; ``hang=True``:
never answer; ``trickle``: from this answer on, everything the connection sends goes out one
byte every so many seconds, valid HTTP/2 all the same), and ``delivered`` (token ->
[(headers, body)]). ``exchanges`` records, per hung or trickled answer, when its request
arrived and when the client went away (reset the stream or closed the connection).

Cost: the benchmarks send thousands of requests a second through it, on the same two cores as
the worker, so the server side is made cheaper where that changes nothing on the wire or in
what is checked: a uvloop event loop (TLS in C), HPACK Huffman decoding a byte per step
(emulators/huffman.py, the same results as hpack's), h2's count of open streams kept as a set
instead of a walk over every stream per new stream, and answers' header values sent as plain
literals (valid HPACK, as Apple's encoder may choose). h2 still checks every inbound frame and
header; the JWT is still verified (once per connection and token, as before).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import ssl
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from emulators import huffman

huffman.install()

TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")
PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
}


@dataclass
class Fault:
    status: int = 503
    reason: str = "ServiceUnavailable"
    hang: bool = False
    trickle: float = 0.0  # seconds between bytes, from this answer on
    delay: float = 0.0  # seconds before the answer


@dataclass
class Exchange:
    stream_id: int
    arrived: float  # time.monotonic()
    gone: float | None = None

    @property
    def held(self) -> float | None:
        return None if self.gone is None else self.gone - self.arrived


def make_p8() -> tuple[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


class ApnsRules:
    """What APNs answers to a request (headers, body), in Apple's order of checks, and the
    state it keeps: shared by this emulator and the one granian serves (emulators/apns_fast.py).
    """

    def __init__(self, team_id: str, key_id: str, topic: str, public_key: Any) -> None:
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self.public_key = public_key
        self.lock = threading.Lock()
        self.unregistered: set[str] = set()
        self.wrong_topic: set[str] = set()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.delivered: dict[str, list[tuple[dict[str, str], dict[str, Any]]]] = defaultdict(list)
        self.requests = 0
        # False: ``delivered`` keeps None per accepted message instead of it (benchmarks).
        self.record_messages = True

    def check_auth(self, authorization: str | None) -> str | None:
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "require": ["iss", "iat"]},
            )
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        if claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        if claims["iat"] < time.time() - 3600:
            return "ExpiredProviderToken"
        return None

    def respond(
        self, headers: dict[str, str], body: bytes, auth_ok: bool
    ) -> tuple[int, str | None, Fault | None]:
        """(status, reason, fault) for one request, in Apple's order of checks."""
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed", None
        match = re.fullmatch(r"/3/device/(.*)", headers.get(":path", ""))
        if not match:
            return 404, "BadPath", None
        token = match.group(1)
        if not token:
            return 400, "MissingDeviceToken", None
        if not auth_ok:
            reason = self.check_auth(headers.get("authorization"))
            if reason:
                return 403, reason, None
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", None
        if topic != self.topic:
            return 400, "TopicDisallowed", None
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return 400, "InvalidPushType", None
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return 400, "BadPriority", None
        if not body:
            return 400, "PayloadEmpty", None
        if len(body) > 4096:
            return 413, "PayloadTooLarge", None
        try:
            if not isinstance(json.loads(body), dict):
                raise ValueError
        except ValueError:
            return 400, "BadPayload", None
        if not TOKEN_RE.match(token):
            return 400, "BadDeviceToken", None
        with self.lock:
            self.requests += 1
            fault = self.faults[token].pop(0) if self.faults.get(token) else None
            if fault is not None and fault.status != 200:
                return fault.status, fault.reason, fault
            if token in self.unregistered:
                return 410, "Unregistered", None
            if token in self.wrong_topic:
                return 400, "DeviceTokenNotForTopic", None
            self.delivered[token].append(
                (dict(headers), json.loads(body)) if self.record_messages else None
            )
        return 200, None, fault  # a 200 fault: delivered, answered late


class ApnsEmulator(ApnsRules):
    def __init__(
        self,
        tmp_dir: Path,
        team_id: str = "TEAM123456",
        key_id: str = "KEY1234567",
        topic: str = "com.example.app",
    ) -> None:
        self.key_pem, public_key = make_p8()
        super().__init__(team_id, key_id, topic, public_key)
        self.ca = trustme.CA()
        self.ca_file = str(tmp_dir / "apns-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.ssl)
        self.ssl.set_alpn_protocols(["h2"])
        self.exchanges: list[Exchange] = []
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    def start(self) -> ApnsEmulator:
        self.thread.start()

        async def serve() -> None:
            self.server = await self.loop.create_server(
                lambda: _H2Server(self), "127.0.0.1", 0, ssl=self.ssl
            )
            self.port = self.server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self.server:
                self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def script(self, token: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[token].extend(faults)

    def messages(self, token: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        with self.lock:
            return list(self.delivered.get(token, []))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _ServerConnection(H2Connection):
    """h2's server connection, but the count of open client streams is kept, not recounted.

    h2 counts open streams (to enforce MAX_CONCURRENT_STREAMS) by walking every stream each
    time a client opens one: with hundreds in flight that walk was a tenth of the emulator's
    CPU. ``live`` holds the client streams opened and neither answered (the emulator always
    ends a stream when it answers) nor reset; h2's own walk, which also forgets closed
    streams, still runs once every 256 new streams.
    """

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        self.live: set[int] = set()
        self._opened = 0

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        if stream_id % 2:
            self.live.add(stream_id)
        return stream

    @property
    def open_inbound_streams(self) -> int:
        self._opened += 1
        if self._opened % 256 == 0:
            return self._open_streams(1)
        return len(self.live)


class _H2Server(asyncio.Protocol):
    def __init__(self, emu: ApnsEmulator) -> None:
        self.emu = emu
        self.conn = _ServerConnection(H2Configuration(client_side=False, header_encoding="utf-8"))
        encoder = self.conn.encoder
        encoder.encode = functools.partial(type(encoder).encode, encoder, huffman=False)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.good_auth: str | None = None
        self.open: dict[int, Exchange] = {}  # hung or trickled answers, by stream
        self.trickle = 0.0
        self.backlog = bytearray()  # what a trickling connection has yet to send

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        for stream_id in list(self.open):
            self.gone(stream_id)
        self.trickle = 0.0

    def gone(self, stream_id: int) -> None:
        exchange = self.open.pop(stream_id, None)
        if exchange is not None:
            exchange.gone = time.monotonic()

    def write(self, data: bytes) -> None:
        if not self.trickle:
            self.transport.write(data)
            return
        self.backlog.extend(data)

    def trickle_one(self) -> None:
        if not self.trickle or self.transport.is_closing():
            return
        if self.backlog:
            self.transport.write(bytes(self.backlog[:1]))
            del self.backlog[:1]
        self.emu.loop.call_later(self.trickle, self.trickle_one)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self.handle(event.stream_id)
            elif isinstance(event, StreamReset):
                self.conn.live.discard(event.stream_id)
                self.gone(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
                return
        self.write(self.conn.data_to_send())

    def handle(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        auth = headers.get("authorization")
        status, reason, fault = self.emu.respond(
            headers, bytes(body), auth is not None and auth == self.good_auth
        )
        if status != 403 and auth:
            self.good_auth = auth
        if fault is not None and (fault.hang or fault.trickle):
            exchange = Exchange(stream_id, time.monotonic())
            self.open[stream_id] = exchange
            with self.emu.lock:
                self.emu.exchanges.append(exchange)
        if fault is not None and fault.hang:
            return  # never answer
        if fault is not None and fault.trickle and not self.trickle:
            self.write(self.conn.data_to_send())  # what came before goes out at once
            self.trickle = fault.trickle
            self.emu.loop.call_later(self.trickle, self.trickle_one)
        if fault is not None and fault.delay:
            self.emu.loop.call_later(
                fault.delay, self.answer_late, stream_id, headers, status, reason
            )
            return
        self.answer(stream_id, headers, status, reason)

    def answer_late(
        self, stream_id: int, headers: dict[str, str], status: int, reason: str | None
    ) -> None:
        if not self.transport.is_closing():
            self.answer(stream_id, headers, status, reason)
            self.write(self.conn.data_to_send())

    def answer(
        self, stream_id: int, headers: dict[str, str], status: int, reason: str | None
    ) -> None:
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        self.conn.live.discard(stream_id)
        try:
            if status == 200:
                self.conn.send_headers(
                    stream_id, [(":status", "200"), ("apns-id", apns_id)], end_stream=True
                )
                return
            payload: dict[str, Any] = {"reason": reason}
            if status == 410:
                payload["timestamp"] = int(time.time() * 1000)
            data = json.dumps(payload).encode()
            self.conn.send_headers(
                stream_id,
                [
                    (":status", str(status)),
                    ("apns-id", apns_id),
                    ("content-type", "application/json"),
                    ("content-length", str(len(data))),
                ],
            )
            self.conn.send_data(stream_id, data, end_stream=True)
        except ProtocolError:
            self.transport.close()
