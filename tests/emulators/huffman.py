"""HPACK Huffman decoding a byte at a time, for the emulators' HTTP/2 servers.

libcurl (nghttp2) Huffman-codes every new header value, and per request the APNs emulator
receives three (``:path`` with the device token, ``apns-id``, ``content-length``). ``hpack``
decodes them a nibble at a time in Python, which was the largest single cost of the emulator
(about a fifth of its CPU per request). This table is ``hpack``'s own nibble state machine
composed two nibbles at a time (built once, 256 states x 256 bytes), so decoding takes one
lookup per byte; the results are the same, errors included (checked in
tests/emulators/test_huffman.py).
"""

from __future__ import annotations

import hpack.hpack
from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
)

_Entry = tuple[int, bytes, bool] | None


def _nibble(state: int, nibble: int, out: bytearray) -> tuple[int, int]:
    state, flags, byte = HUFFMAN_TABLE[state * 16 + nibble]
    if flags & HUFFMAN_EMIT_SYMBOL and not flags & HUFFMAN_FAIL:
        out.append(byte)
    return state, flags


def _byte_table() -> list[_Entry]:
    """Entry ``state * 256 + byte``: (next state * 256, bytes decoded, complete) or None (an
    invalid string)."""
    table: list[_Entry] = []
    for state in range(len(HUFFMAN_TABLE) // 16):
        for byte in range(256):
            out = bytearray()
            mid, flags = _nibble(state, byte >> 4, out)
            if flags & HUFFMAN_FAIL:
                table.append(None)
                continue
            end, flags = _nibble(mid, byte & 0x0F, out)
            if flags & HUFFMAN_FAIL:
                table.append(None)
                continue
            table.append((end * 256, bytes(out), bool(flags & HUFFMAN_COMPLETE)))
    return table


_TABLE = _byte_table()


def decode_huffman(data: bytes | bytearray | memoryview | None) -> bytes:
    """``hpack.huffman_table.decode_huffman``, a byte per step."""
    if not data:
        return b""
    table = _TABLE
    index, complete = 0, False
    out: list[bytes] = []
    for byte in bytes(data):
        entry = table[index + byte]
        if entry is None:
            raise HPACKDecodingError("Invalid Huffman string")
        index, decoded, complete = entry
        out.append(decoded)
    if not complete:
        raise HPACKDecodingError("Incomplete Huffman string")
    return b"".join(out)


def install() -> None:
    """Make ``hpack`` (every decoder in this process) use :func:`decode_huffman`."""
    hpack.hpack.decode_huffman = decode_huffman
