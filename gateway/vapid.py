"""VAPID keys (RFC 8292) for Web Push: loading an app's key, its public half, new key pairs.

Used by the Beams API (``GET …/web-vapid-public-key``, which browsers subscribe with), the
push workers (signing), and ``clarion push vapid-keys``. Keys are P-256; the private key is
written as base64url of its raw 32 bytes and the public key as base64url of the uncompressed
point, the forms the ``web-push`` tools print.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid


class VapidKeyError(ValueError):
    """The configured VAPID key cannot be used."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_vapid(value: str) -> Vapid:
    """The app's VAPID key: base64url raw or DER, PEM text, or a path to a PEM file."""
    text = value
    if "-----BEGIN" not in value and ("/" in value or value.endswith(".pem")):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise VapidKeyError(f"cannot read {value!r}: {exc.strerror}") from None
    try:
        if "-----BEGIN" in text:
            return Vapid.from_pem(text.encode())
        return Vapid.from_string(text.strip())
    except (ValueError, TypeError, binascii.Error) as exc:
        raise VapidKeyError(f"the VAPID private key is unusable: {exc}") from None


def public_key_b64(vapid: Vapid) -> str:
    """The application server key browsers subscribe with."""
    return _b64(vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ))


def generate() -> tuple[str, str]:
    """A new ``(private, public)`` key pair, both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64(private), _b64(public)
