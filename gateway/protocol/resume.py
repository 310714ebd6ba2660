"""Whether a subscription can resume where a client left off (docs/resume.md): pure decisions
over the channel's chain of serials, no I/O.

A client resumes after serial ``after``. The node knows the channel up to ``position`` (the
last serial it delivered) and reads the log's events in ``(after, position]``. Every logged
event carries its predecessor's serial, so the first of them says whether the log continues
directly from the client's serial: then the client gets exactly those events. Otherwise the
events in between are gone, because they left the log (``expired``: older than its retention
or beyond its count) or because the log is not the one the client saw (``reset``: Redis lost
its data, was replaced, or was rolled back by a failover).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

EXPIRED = "expired"
RESET = "reset"
# The log could not be read (Redis unreachable) after the replay had started.
UNAVAILABLE = "unavailable"


class Link(Protocol):
    @property
    def serial(self) -> int: ...

    @property
    def prev(self) -> int: ...


def failure(after: int, position: int, logged: Sequence[Link]) -> str | None:
    """Why the events in ``(after, position]`` cannot all be replayed from ``logged`` (the
    log's events in that range, oldest first, possibly only its first page); None if they
    can. Also answers for a later page, with ``after`` the last serial already sent."""
    if position < after:
        return RESET  # the channel is behind the client: its log was rolled back or lost
    if position == after:
        return None
    if not logged:
        return EXPIRED  # the counter moved on but nothing after the client is left
    first = logged[0].prev
    if first == after:
        return None
    # A chain that started before the client's serial and skips it is another history; one
    # that starts after it is the same history with its beginning trimmed.
    return EXPIRED if first > after else RESET
