"""Idempotency keys of publishes: one record per (app, key), written by the accept script.

A publish with a key is accepted and its key recorded in ONE step, the accept script
(gateway/state/history.py): the script first looks the key up and, if it was used within the
window, accepts nothing and returns what it found (:class:`SeenRequest`). So two API
processes racing with one key cannot both accept: Redis runs one script after the other.

The record (``P idem:{app}/{key}``, a hash) holds the request's fingerprint ``f`` and the
response ``r`` the first request answered. When that response is known before accepting (a
publish without ``info`` answers ``{}``), the script writes it with the fingerprint, so no
request ever finds the key "in flight". Otherwise (``info`` counts are read after accepting)
the script writes ``t``, the time it accepted, and the API saves the response once it has it
(:meth:`IdempotencyRecords.save_response`); a duplicate arriving meanwhile waits for it
(:meth:`IdempotencyRecords.wait_response`). If the first request died before saving it, the
duplicate saves its own: whichever is saved first is what every request with that key is
then answered.

The record expires ``window`` after the first request and is not renewed by repeats: the
window is a promise about retries, not a lease that a client keeps alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# The first reply element of the accept script when the key was used already: serials are
# never negative.
SEEN = -1

# HSETNX then HGET: the response saved first wins, and every request returns that one. A
# record that expired meanwhile is not written again (it would have no expiry).
SAVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'r', ARGV[1])
redis.call('HDEL', KEYS[1], 't')
return redis.call('HGET', KEYS[1], 'r')
"""


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request's idempotency key, as the accept script takes it."""

    key: str  # the Redis key
    fingerprint: str
    # The response, when it is known before accepting (then saved with the key at once).
    response: bytes | None
    window_ms: int

    def args(self) -> list[Any]:
        return [self.fingerprint, self.response or b"", self.window_ms]


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """What the accept script found under a key used within the window: nothing was accepted."""

    fingerprint: str
    response: bytes | None
    # Microseconds since the first request was accepted, while its response is not saved.
    age_us: int | None

    @classmethod
    def from_reply(cls, reply: list[Any]) -> SeenRequest:
        _flag, fingerprint, response, age = reply
        text = fingerprint.decode() if isinstance(fingerprint, bytes) else fingerprint
        return cls(text, response, None if age is None or int(age) < 0 else int(age))


class IdempotencyRecords:
    """Responses of the records the accept script wrote (synchronous redis client)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._save = register_script(redis, SAVE_LUA)

    def key(self, app_id: str, idempotency_key: str) -> str:
        return self.keys.idempotency(app_id, idempotency_key)

    def save_response(self, key: str, response: bytes) -> bytes:
        """Save ``response`` unless one is saved already; the saved one."""
        saved = self._save(keys=[key], args=[response])
        return saved if saved is not None else response

    def wait_response(self, key: str, timeout: float, poll: float = 0.01) -> bytes | None:
        """The saved response, polled until ``timeout`` seconds have passed (None then)."""
        deadline = time.monotonic() + timeout
        while True:
            saved = self.redis.hget(key, "r")
            if saved is not None or time.monotonic() >= deadline:
                return saved  # type: ignore[no-any-return]
            time.sleep(poll)
