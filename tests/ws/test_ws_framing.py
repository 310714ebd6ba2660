"""Raw server frames: header lengths at the 125/126/65536 boundaries, close reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateway.ws import framing


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    gen = Frame.parse(reader.read_exact, mask=False)
    try:
        next(gen)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_lengths(size: int) -> None:
    payload = b"x" * size
    frame = parse(framing.text(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


@given(st.text(max_size=200), st.integers(min_value=1000, max_value=4999))
def test_close_frame_reason_is_valid_utf8(reason: str, code: int) -> None:
    frame = parse(framing.close(code, reason))
    assert frame.opcode is Opcode.CLOSE
    assert len(frame.data) <= 125
    assert int.from_bytes(frame.data[:2], "big") == code
    frame.data[2:].decode()  # never raises


def test_ping_frame() -> None:
    frame = parse(framing.ping(b"p"))
    assert frame.opcode is Opcode.PING and frame.data == b"p"
