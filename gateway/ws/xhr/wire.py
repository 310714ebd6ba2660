"""pusher-js's HTTP transports on the wire (xhr_streaming, xhr_polling): pure, no I/O.

What is read and written here is what pusher-js 8's own source expects (docs/http-fallback.md
names the files): requests under ``/pusher/app/{key}/{server}/{session}/{kind}``, and responses
made of lines, one frame each:

* ``o``: the session is open (only ever first);
* ``a["msg",...]``: messages, each a Pusher message as a JSON *string* (pusher-js JSON-parses the
  array, then each string, as it does a WebSocket frame's text);
* ``h``: a heartbeat;
* ``c[code,"reason"]``: the session is closed, with the code a WebSocket would close with.

The Connection writes WebSocket frames (gateway/ws/framing.py); ``Reframer`` turns them into these
lines: text frames into one ``a`` line, a close frame into ``c``, a ping into ``h``. Lines are
pure ASCII (non-ASCII characters escaped), so the bytes a stream carried equal the characters
pusher-js counts against its 256 KB buffer limit (see MAX_STREAM_BYTES).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

import orjson

from gateway.ws.framing import OP_CLOSE, OP_PING, OP_TEXT

# pusher-js's default httpPath: apps set httpHost/httpPort to the node's wsHost/wsPort.
HTTP_PATH = "/pusher"
RECEIVE_KINDS = ("xhr_streaming", "xhr")
SEND = "xhr_send"
OPEN = b"o\n"
HEARTBEAT = b"h\n"
# pusher-js (core/http/http_request.ts, MAX_BUFFER_LENGTH) drops a stream and opens a new one
# once it has read more than this many characters on it and every line of them is complete.
MAX_STREAM_BYTES = 256 * 1024
# Messages one xhr_send may carry: pusher-js sends one per request.
MAX_MESSAGES_PER_SEND = 100

# pusher-js's server id is a number below 1000 and its session id 8 base-32 characters; other
# clients of the same protocol may differ, so any short URL-safe token is taken.
_TARGET = re.compile(
    rf"^{HTTP_PATH}/app/([^/]{{1,200}})/([A-Za-z0-9_-]{{1,32}})/([A-Za-z0-9_-]{{1,32}})/"
    r"(xhr_streaming|xhr|xhr_send)$"
)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's path names: the app key, the session, and what the request does."""

    key: str
    session: str  # "{server}/{session}": unique enough per app key
    kind: str  # "xhr_streaming", "xhr" (a poll) or "xhr_send"

    @property
    def receives(self) -> bool:
        return self.kind != SEND


def parse_target(path: str) -> Target | None:
    """The target of ``path`` (no query string), or None when it is not one of ours."""
    match = _TARGET.match(path)
    if match is None:
        return None
    key, server, session, kind = match.groups()
    return Target(key, f"{server}/{session}", kind)


class BadBody(ValueError):
    """An xhr_send body that is not a JSON array of strings."""


def parse_send(body: bytes) -> list[bytes]:
    """The messages of an xhr_send body: ``["<pusher message>", ...]``; ``[]`` is pusher-js's
    heartbeat (no message, only a sign of life)."""
    if not body:
        raise BadBody("Payload expected: a JSON array of strings.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadBody("Broken JSON encoding: expected a JSON array of strings.") from None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise BadBody("Expected a JSON array of strings.")
    if len(value) > MAX_MESSAGES_PER_SEND:
        raise BadBody(f"At most {MAX_MESSAGES_PER_SEND} messages per request.")
    return [m.encode() for m in value]


def close_line(code: int, reason: str) -> bytes:
    return f"c[{code},{encode_basestring_ascii(reason)}]\n".encode("ascii")


def messages_line(payloads: list[bytes]) -> bytes:
    """``a[...]`` for Pusher messages given as JSON text."""
    quoted = [encode_basestring_ascii(p.decode("utf-8", "replace")) for p in payloads]
    return ("a[" + ",".join(quoted) + "]\n").encode("ascii")


def frames_to_lines(data: bytes) -> bytes:
    """Server WebSocket frames (unmasked, unfragmented: gateway/ws/framing.py) as lines."""
    out: list[bytes] = []
    texts: list[bytes] = []
    i, n = 0, len(data)
    while i < n:
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i:i + 8], "big"), i + 8
        payload, i = data[i:i + length], i + length
        if opcode == OP_TEXT:
            texts.append(payload)
            continue
        if texts:
            out.append(messages_line(texts))
            texts = []
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            out.append(close_line(code, payload[2:].decode("utf-8", "replace")))
        elif opcode == OP_PING:
            out.append(HEARTBEAT)
    if texts:
        out.append(messages_line(texts))
    return b"".join(out)


class Reframer:
    """``frames_to_lines`` with a memory of one: a fan-out hands the same bytes object to every
    subscriber, so the event is re-framed once, not once per HTTP subscriber."""

    __slots__ = ("_last_in", "_last_out")

    def __init__(self) -> None:
        self._last_in: bytes | None = None
        self._last_out = b""

    def __call__(self, data: bytes) -> bytes:
        if data is self._last_in:
            return self._last_out
        out = frames_to_lines(data)
        self._last_in, self._last_out = data, out
        return out


def close_of(lines: bytes) -> bytes:
    """The ``c`` line that ends re-framed output, or b"" (a close is always the last line; no
    line holds a raw newline, so one that starts with ``c[`` is a close)."""
    if lines.startswith(b"c["):
        return lines
    at = lines.rfind(b"\nc[")
    return lines[at + 1:] if at >= 0 else b""
