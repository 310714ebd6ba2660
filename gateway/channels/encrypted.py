"""End-to-end encrypted channels (``private-encrypted-``).

Authorised exactly like private channels: the ``shared_secret`` the app's auth endpoint hands
to the client is not signed and never reaches us. Payloads are relayed byte for byte (the hub
never parses event data), and client events are refused (see Membership).
"""

from __future__ import annotations

from config.settings import AppSettings
from gateway.channels import private
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.messages import Subscribe
from gateway.protocol.names import ChannelKind


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    private.verify(app, socket_id, sub.channel, sub.auth)
    return Membership(sub.channel, ChannelKind.ENCRYPTED)
