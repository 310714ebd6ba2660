"""How deeply nested a JSON value Clarion takes from a client, HTTP body or WebSocket frame.

orjson parses up to 1024 levels but encodes at most 254, and the stdlib parser (used on some
stored values) dies of RecursionError around 1000: a value Clarion accepts must survive being
encoded and decoded again, so every input is held to :data:`MAX_JSON_DEPTH`, far above what
any Pusher or Beams message needs (about five levels).
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 32


def deeper_than(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON) has arrays or objects nested more than ``limit``
    levels. Iterative, so the check itself cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
