"""Idempotent publish: ``POST /events`` and ``/batch_events`` with an idempotency key
(docs/api.md, "Idempotent publish").

The key comes as the ``Idempotency-Key`` header (Stripe's, the IETF draft's) or as the body's
``idempotency_key`` field (what the Node, PHP and Ruby SDKs' ``trigger`` params add to the
body; the body is covered by the request signature, a header is not). Keys are per app.

A request repeated with the same key within the window (``api.idempotency_window``, or the
app's) is answered what the first one answered (header ``Idempotent-Replayed: true``) and
accepts nothing, so nothing is delivered twice. The same key with a different request is
refused (422). The first request's acceptance and its key are one atomic step, the accept
script (gateway/state/idempotency.py), so two API processes racing with one key cannot both
accept.

What "the same request" means: the fingerprint of what was validated (endpoint, and each
event's name, data, channels, excluded socket id and info attributes), not the body's bytes,
so a retry that moves the key from the header to the body, or whose JSON encoder orders keys
differently, is still the same request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from gateway.protocol.errors import BadRequest, IdempotencyKeyReused
from gateway.state.idempotency import IdempotencyClaim, IdempotencyRecords, SeenRequest

HEADER = "Idempotency-Key"
FIELD = "idempotency_key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY = 255  # Stripe's limit
# UUIDs, ULIDs, hex, base64 and base64url, and readable ids such as "order:42/shipped".
_KEY = re.compile(rf"[A-Za-z0-9_.:~+/=@-]{{1,{MAX_KEY}}}")
KEY_RULE = f"1 to {MAX_KEY} characters among letters, digits and _.:~+/=@-"
# How long a repeat waits for the response of a first request that was accepted but has not
# answered yet (only publishes with ``info`` have such a moment, a few ms of Redis reads):
# past it, the repeat answers for the first one. Short, because the wait holds the API
# worker's event loop (gateway/api/rsgi_bridge.py), and safe to be short: whichever answer is
# saved first is every request's answer.
IN_FLIGHT_SECONDS = 0.5


class PublishLike(Protocol):
    event: str
    data: str
    channels: list[str]
    exclude: str | None
    info: frozenset[str]


def _check(key: object, where: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        shown = str(key)[:40]
        raise BadRequest(f"Invalid idempotency key ({where}) {shown!r}: {KEY_RULE} expected.")
    return key


def key_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The request's idempotency key (header or body field, the same if both), or None."""
    header = headers.get(HEADER)
    field = body.get(FIELD)
    if header is None and field is None:
        return None
    if header is not None and field is not None and header != field:
        raise BadRequest(f"The {HEADER} header and the body's {FIELD} differ: give one key.")
    if header is not None:
        return _check(header, f"{HEADER} header")
    return _check(field, f"body field {FIELD}")


def refuse_in_item(item: Mapping[str, Any], where: str) -> None:
    """A key covers a whole request: one inside a batch item would silently protect nothing."""
    if FIELD in item:
        raise BadRequest(f"{where}{FIELD} belongs at the top level of the body, next to batch "
                         f"(or in the {HEADER} header): a key covers the whole request.")


def fingerprint(endpoint: str, publishes: Sequence[PublishLike]) -> str:
    """What makes two requests with one key the same request (see the module's docstring)."""
    canonical = orjson.dumps([
        endpoint,
        [[p.event, p.data, p.channels, p.exclude, sorted(p.info)] for p in publishes],
    ])
    return hashlib.sha256(canonical).hexdigest()[:32]


def claim(
    records: IdempotencyRecords, app_id: str, key: str, window: int, endpoint: str,
    publishes: Sequence[PublishLike], known: bytes | None,
) -> IdempotencyClaim:
    """The claim the accept script makes on ``key``; ``known``: the response when it does not
    depend on what accepting does (then saved with the key, in the same step)."""
    return IdempotencyClaim(records.key(app_id, key), fingerprint(endpoint, publishes), known,
                            window * 1000)


def answer_again(
    records: IdempotencyRecords, claim: IdempotencyClaim, seen: SeenRequest, key: str,
    window: int, respond: Callable[[], bytes],
) -> bytes:
    """The response for a request whose key was used within the window: the first request's,
    once it is saved. Raises :class:`IdempotencyKeyReused` if the requests differ."""
    if seen.fingerprint != claim.fingerprint:
        raise IdempotencyKeyReused(
            f"The idempotency key {key!r} was used in the last {window} s for a different "
            "request (another endpoint, event name, data, channel, socket_id or info): use a "
            "new key for a new request."
        )
    if seen.response is not None:
        return seen.response
    left = IN_FLIGHT_SECONDS - (seen.age_us or 0) / 1e6
    saved = records.wait_response(claim.key, left) if left > 0 else None
    # The first one's events are accepted: its answer, if it never gave one, is ours.
    return saved if saved is not None else records.save_response(claim.key, respond())
