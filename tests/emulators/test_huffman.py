"""The emulators' byte-at-a-time HPACK Huffman decoder gives what hpack's own gives, on valid
strings and on broken ones."""

from __future__ import annotations

import random

import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as reference

from emulators.huffman import decode_huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def outcome(decode, data: bytes) -> bytes | str:
    try:
        return decode(data)
    except HPACKDecodingError:
        return "error"


def test_valid_strings_decode_as_hpack_decodes_them():
    rng = random.Random(16)
    samples = [b"", b"/3/device/" + b"ab" * 32, b"0123456789", bytes(range(256))]
    samples += [rng.randbytes(rng.randrange(1, 80)) for _ in range(2000)]
    for raw in samples:
        encoded = ENCODER.encode(raw)
        assert decode_huffman(encoded) == reference(encoded) == raw


@pytest.mark.parametrize("seed", range(4))
def test_broken_strings_fail_as_hpack_fails(seed):
    rng = random.Random(seed)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(1, 12))
        assert outcome(decode_huffman, data) == outcome(reference, data), data
    for _ in range(500):  # a valid string cut short or padded with zero bits
        encoded = ENCODER.encode(rng.randbytes(rng.randrange(1, 30)))
        for data in (encoded[:-1], encoded + b"\x00", encoded + b"\xff"):
            assert outcome(decode_huffman, data) == outcome(reference, data), data
