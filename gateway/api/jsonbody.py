"""JSON request bodies, parsed one strict way for every endpoint (Channels REST, webhooks
operator API, Beams): anything hostile is a 400 that says what is wrong, never a 500.

Two passes over bodies that are small (``api.max_body_bytes`` bounds them):

1. orjson: refuses invalid UTF-8 and lone surrogates, NaN and Infinity, numbers that
   overflow a double, control characters in strings, trailing content, and nesting past
   1024 levels (the stdlib parser instead dies of RecursionError, which was a 500). Then
   nesting deeper than 32 levels is refused (gateway/protocol/depth.py): no body we take is
   legitimately deep, and what we keep must survive later stages (a Beams publish is re-read
   with the stdlib parser by the worker; orjson encodes at most 254 levels).
2. the stdlib parser, safe now that the depth is bounded, for what orjson lets through
   silently: duplicate keys (orjson keeps the last, other parsers the first: a body whose
   meaning depends on who reads it is refused) and integers outside 64 bits (orjson turns
   them into floats, dropping digits). Its result is the one returned.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway.protocol.depth import MAX_JSON_DEPTH as MAX_DEPTH
from gateway.protocol.depth import deeper_than
from gateway.protocol.errors import InvalidJson

INT64 = range(-(2**63), 2**63)
_REQUIRED = object()
_NAMES = {dict: "a JSON object", list: "a JSON array"}


def parse_json(raw: bytes, *, expect: type | None = dict, empty: Any = _REQUIRED) -> Any:
    """The body ``raw`` as JSON of type ``expect`` (None: any); ``empty`` is returned for an
    empty body, which is otherwise refused. Raises :class:`InvalidJson` (HTTP 400)."""
    if not raw.strip():
        if empty is not _REQUIRED:
            return empty
        raise InvalidJson(f"The request body is empty: {_NAMES.get(expect, 'JSON')} is expected.")
    try:
        _check_depth(orjson.loads(raw))
        value = _STRICT.decode(raw.decode())
    except _Refused as exc:
        raise InvalidJson(f"The request body is refused: {exc}.") from None
    except ValueError as exc:  # orjson.JSONDecodeError is one
        raise InvalidJson(f"The request body is not valid JSON: {exc}.") from None
    if expect is not None and not isinstance(value, expect):
        raise InvalidJson(f"The request body must be {_NAMES.get(expect, expect.__name__)}.")
    return value


class _Refused(ValueError):
    """Valid JSON that Clarion does not take (too deep, duplicate key, integer too big)."""


def _check_depth(value: Any) -> None:
    if deeper_than(value, MAX_DEPTH):
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def _int64(text: str) -> int:
    value = int(text)
    if value not in INT64:
        raise _Refused(f"integer {text[:30]}{'...' if len(text) > 30 else ''} does not fit in "
                       "64 bits")
    return value


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_int=_int64)
