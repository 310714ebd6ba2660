"""Public channels: anyone may subscribe, no signature."""

from __future__ import annotations

from config.settings import AppSettings
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.messages import Subscribe
from gateway.protocol.names import ChannelKind


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    return Membership(sub.channel, ChannelKind.PUBLIC)
