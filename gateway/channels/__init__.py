"""Channel authorisation, one module per kind: pure functions, no I/O.

``authorise(app, socket_id, subscribe, signed_in_user)`` returns the Membership a
subscription grants, or raises a SubscriptionError (sent as ``pusher:subscription_error``).
Name validation happens before (gateway.protocol.names); member limits need shared state and
are checked by the node.
"""

from __future__ import annotations

from collections.abc import Callable

from config.settings import AppSettings
from gateway.channels import cache, encrypted, presence, private, public, user
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.messages import Subscribe
from gateway.protocol.names import ChannelKind, channel_kind

Authoriser = Callable[[AppSettings, str, Subscribe, SignedInUser | None], Membership]

_BY_KIND: dict[ChannelKind, Authoriser] = {
    ChannelKind.PUBLIC: public.authorise,
    ChannelKind.PRIVATE: private.authorise,
    ChannelKind.ENCRYPTED: encrypted.authorise,
    ChannelKind.PRESENCE: presence.authorise,
    ChannelKind.USER: user.authorise,
}


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, signed_in: SignedInUser | None = None
) -> Membership:
    membership = _BY_KIND[channel_kind(sub.channel)](app, socket_id, sub, signed_in)
    return cache.mark(membership)


__all__ = ["Membership", "SignedInUser", "authorise"]
