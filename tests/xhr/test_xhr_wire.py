"""gateway/ws/xhr/wire.py: pusher-js's HTTP framing, with no sockets."""

from __future__ import annotations

import json

import pytest

from gateway.ws import framing
from gateway.ws.xhr import wire


def test_targets() -> None:
    t = wire.parse_target("/pusher/app/app-key/123/abcdefgh/xhr_streaming")
    assert t == wire.Target("app-key", "123/abcdefgh", "xhr_streaming") and t.receives
    assert wire.parse_target("/pusher/app/k/1/s/xhr_send").receives is False
    assert wire.parse_target("/pusher/app/k/1/s/xhr").kind == "xhr"
    for bad in ("/pusher/app/k/1/s/xhr_other", "/pusher/app/k/1/xhr", "/app/k/1/s/xhr",
                "/pusher/app/k/1/s.x/xhr", "/pusher/app/k/1/" + "s" * 33 + "/xhr"):
        assert wire.parse_target(bad) is None


def test_frames_become_lines() -> None:
    a = b'{"event":"x","data":"\\u00e9 \\"q\\""}'
    b = '{"event":"y","data":"é ☃"}'.encode()
    data = framing.text(a) + framing.text(b) + framing.ping() + framing.close(4201, "Pong é")
    lines = wire.frames_to_lines(data)
    assert lines.isascii()
    first, heartbeat, close, end = lines.split(b"\n")
    assert first.startswith(b"a") and json.loads(first[1:]) == [a.decode(), b.decode()]
    assert heartbeat == b"h" and end == b""
    assert json.loads(close[1:]) == [4201, "Pong é"]
    assert wire.close_of(lines) == close + b"\n"
    assert wire.close_of(first + b"\n") == b""


def test_long_frames() -> None:
    for n in (125, 126, 65535, 65536, 300_000):
        payload = b'"' + b"x" * n + b'"'
        (line,) = wire.frames_to_lines(framing.text(payload)).splitlines()
        assert json.loads(line[1:]) == [payload.decode()]


def test_reframer_builds_a_fanout_once() -> None:
    reframe = wire.Reframer()
    frame = framing.text(b'{"event":"x"}')
    first = reframe(frame)
    assert reframe(frame) is first
    assert reframe(bytes(frame)) == first


@pytest.mark.parametrize("body", [b"", b"x", b"{}", b'"s"', b"[1]", b'["a", null]',
                                  json.dumps(["m"] * 101).encode()])
def test_bad_send_bodies(body: bytes) -> None:
    with pytest.raises(wire.BadBody):
        wire.parse_send(body)


def test_send_bodies() -> None:
    assert wire.parse_send(b"[]") == []
    assert wire.parse_send(json.dumps(['{"event":"pusher:ping"}', "é"]).encode()) == [
        b'{"event":"pusher:ping"}', "é".encode()]
