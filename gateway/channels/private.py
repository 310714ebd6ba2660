"""Private channels: ``auth`` is ``<key>:HMAC(secret, "<socket_id>:<channel>")``."""

from __future__ import annotations

from config.settings import AppSettings
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.errors import SubscriptionAuthError
from gateway.protocol.messages import Subscribe
from gateway.protocol.names import ChannelKind
from gateway.protocol.signatures import channel_string, token_matches


def verify(app: AppSettings, socket_id: str, channel: str, auth: str | None) -> None:
    """Raise SubscriptionAuthError unless ``auth`` signs ``socket_id:channel`` for this app."""
    if not token_matches(app.key, app.secret, auth, channel_string(socket_id, channel)):
        raise SubscriptionAuthError(channel)


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    verify(app, socket_id, sub.channel, sub.auth)
    return Membership(sub.channel, ChannelKind.PRIVATE)
