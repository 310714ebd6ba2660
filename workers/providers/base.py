"""What a provider send comes to, whatever the provider: one :class:`SendResult` per token."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

DELIVERED = "delivered"  # the provider took it
DEAD = "dead"  # the token is dead: remove the device
RETRY = "retry"  # throttled, provider error, timeout, transport error: try again later
FAILED = "failed"  # this message can never go (bad payload, too large): give up, keep the token
AUTH = "auth"  # our credentials or configuration were refused: stop sending on this platform


class CredentialsError(Exception):
    """Credentials missing, unreadable, or refused by the provider."""


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: str
    detail: str = ""
    retry_after: float | None = None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def read_secret(value: str, marker: str) -> str:
    """``value`` itself if it contains ``marker`` (inline text), else the file it names."""
    if marker in value:
        return value
    try:
        with open(value, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CredentialsError(f"cannot read {value!r}: {exc.strerror}") from None
