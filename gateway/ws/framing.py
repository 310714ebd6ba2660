"""Raw server-to-client WebSocket frames (RFC 6455 §5.2), built once and written as bytes.

Server frames are never masked, so one frame's bytes serve every subscriber: the hub builds a
channel event's frame once per event and hands the same bytes object to each connection
(the "cork" pattern: one write per subscriber per loop turn).
"""

from __future__ import annotations

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
_FIN = 0x80


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked frame carrying ``payload``."""
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def text(payload: bytes) -> bytes:
    return frame(payload, OP_TEXT)


def close(code: int, reason: str = "") -> bytes:
    # Control frames carry at most 125 bytes: 2 for the code, the rest for the reason, which
    # must stay valid UTF-8 when cut (clients fail the connection otherwise).
    cut = reason.encode()[:123].decode(errors="ignore").encode()
    return frame(code.to_bytes(2, "big") + cut, OP_CLOSE)


def ping(payload: bytes = b"") -> bytes:
    return frame(payload[:125], OP_PING)
