"""The bench event: what the publisher puts in ``data`` and what subscribers look for.

``data`` is the string ``b:<lane>:<seq>:<monotonic_ns>[:<padding>]``. A lane is one publisher
connection whose requests are strictly sequential, so the server must deliver each lane's
sequence numbers in order; lanes may interleave. CLOCK_MONOTONIC is system-wide on Linux,
so publisher and subscriber processes share the clock and the difference is the latency.
The string has no quote or backslash, so every server relays it byte for byte in its frame.
"""

from __future__ import annotations

import time

EVENT_NAME = "bench"
MAX_LANES = 16
EVENT_MARK = b'"event":"bench"'
DATA_MARK = b'"data":"b:'


def event_data(lane: int, seq: int, padding: int = 0) -> str:
    data = f"b:{lane}:{seq}:{time.monotonic_ns()}"
    if padding:
        data += ":" + "x" * padding
    return data


def parse_data(field: bytes) -> tuple[int, int, int]:
    """``lane, seq, sent_ns`` from the bytes after ``"data":"b:`` up to the closing quote."""
    lane, seq, sent = field.split(b":", 3)[:3]
    return int(lane), int(seq), int(sent)
