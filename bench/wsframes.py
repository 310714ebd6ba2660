"""Just enough RFC 6455 and Pusher protocol 7 for a cheap load client.

Server frames arrive unmasked; everything the client sends must be masked. The subscriber only
reads frame headers in its hot loop (see subscriber.py); this module builds the bytes it sends
and parses the endpoint URL.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

PUSHER_QUERY = "protocol=7&client=js&version=8.4.0&flash=false"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


@dataclass(frozen=True)
class Endpoint:
    """Where a subscriber connects: ``ws://127.0.0.1:PORT`` plus the Pusher app path."""

    host: str
    port: int
    path: str

    @classmethod
    def for_app(cls, ws_url: str, key: str) -> Endpoint:
        parts = urlsplit(ws_url)
        if parts.scheme != "ws":
            raise ValueError(f"{ws_url}: only plain ws:// URLs are supported")
        host = require_local(parts.hostname or "")
        base = parts.path.rstrip("/")
        return cls("127.0.0.1" if host == "localhost" else host, parts.port or 80,
                   f"{base}/app/{key}?{PUSHER_QUERY}")


def require_local(host: str) -> str:
    """The bench only ever talks to this machine."""
    if host not in LOCAL_HOSTS:
        raise ValueError(f"refusing non-local host {host!r}: the bench only talks to 127.0.0.1")
    return host


def upgrade_request(endpoint: Endpoint) -> bytes:
    """An HTTP/1.1 upgrade offering no extension (so no permessage-deflate)."""
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {endpoint.path} HTTP/1.1\r\n"
        f"Host: {endpoint.host}:{endpoint.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A final client frame with a random mask, as RFC 6455 requires from clients."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return header + key + masked


def subscribe_frame(channel: str) -> bytes:
    return masked_frame(b'{"event":"pusher:subscribe","data":{"channel":"%s"}}' % channel.encode())


PONG_EVENT = b'{"event":"pusher:pong","data":{}}'
PING_EVENT = b'{"event":"pusher:ping","data":{}}'


def unmask_for_test(frame: bytes) -> bytes:
    """Decode one masked client frame (only used by the self-check in tests)."""
    n = frame[1] & 0x7F
    offset = 2
    if n == 126:
        n, offset = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, offset = int.from_bytes(frame[2:10], "big"), 10
    key, body = frame[offset:offset + 4], frame[offset + 4:offset + 4 + n]
    return bytes(b ^ key[i % 4] for i, b in enumerate(body))
