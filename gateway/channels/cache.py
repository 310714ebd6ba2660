"""Cache channels (``cache-``, ``private-cache-``, ``private-encrypted-cache-``,
``presence-cache-``).

For now a cache channel is authorised and delivered exactly as its base kind (the prefix
routing in ``names.channel_kind`` already maps ``private-cache-`` to private and so on); the
membership is only flagged ``cache=True``.

Seam for the last-event replay: after ``subscription_succeeded`` the WebSocket node calls
``replay_after_subscribe`` for flagged memberships (gateway/ws/connection.py,
``Connection._after_subscribed``). It will read the cached ``{event, data}`` and send it, or
``pusher:cache_miss`` (+ the cache_miss webhook). Only events published over HTTP are cached,
never client events.
"""

from __future__ import annotations

from gateway.channels.membership import Membership
from gateway.protocol.names import is_cache_channel


def mark(membership: Membership) -> Membership:
    """The membership flagged as a cache channel when its name says so."""
    if not is_cache_channel(membership.channel):
        return membership
    return Membership(
        membership.channel, membership.kind, membership.user_id, membership.user_info, cache=True
    )


def replay_after_subscribe(membership: Membership) -> bool:
    """Whether the node must replay the cached event (not implemented yet: always False)."""
    return False
