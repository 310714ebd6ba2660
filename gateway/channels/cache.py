"""Cache channels (``cache-``, ``private-cache-``, ``private-encrypted-cache-``,
``presence-cache-``).

A cache channel is authorised and delivered exactly as its base kind (the prefix routing in
``names.channel_kind`` already maps ``private-cache-`` to private and so on); the membership
is only flagged ``cache=True``.

The ``live`` worker keeps the last event published over HTTP on each cache channel
(gateway/state/cache.py; never client events). Right after ``subscription_succeeded`` the
WebSocket node (``Connection._after_subscribed``) sends that event, or ``pusher:cache_miss``
when there is none (the node's ``NodeContext.cache_miss`` hook reports the webhook).
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


def replay_after_subscribe(cached_serial: int, last_delivered: int | None) -> bool:
    """Whether a new subscriber gets the cached event replayed.

    Not when the node has not delivered that serial on the channel yet: the event was then
    accepted after the subscription's baseline and reaches the subscriber live, so replaying
    it too would deliver it twice. An unknown baseline (None) replays.
    """
    return last_delivered is None or cached_serial <= last_delivered
