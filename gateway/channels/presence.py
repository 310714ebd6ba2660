"""Presence channels: private auth plus a member identity in ``channel_data``.

The signature covers ``<socket_id>:<channel>:<channel_data>`` over the exact string received
(the Python SDK signs ``json.dumps`` output with spaces, PHP and Node compact JSON), so the
string is verified first and parsed after. ``channel_data`` is a JSON object with ``user_id``
(string or number, normalised to a string everywhere) and an optional ``user_info``.

pusher-js lets an app's auth endpoint omit ``channel_data`` for a connection that signed in;
the member is then the signed-in user, and the signature covers ``<socket_id>:<channel>``.
"""

from __future__ import annotations

from typing import Any

import orjson

from config.settings import AppSettings
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.errors import SubscriptionAuthError, UserInfoTooLarge
from gateway.protocol.messages import Subscribe
from gateway.protocol.names import ChannelKind
from gateway.protocol.signatures import channel_string, token_matches


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    if sub.channel_data is None:
        return _as_signed_in_user(app, socket_id, sub, user)
    message = channel_string(socket_id, sub.channel, sub.channel_data)
    if not token_matches(app.key, app.secret, sub.auth, message):
        raise SubscriptionAuthError(sub.channel)
    user_id, user_info = parse_channel_data(sub.channel, sub.channel_data)
    check_user_info_size(app, sub.channel, user_info)
    return Membership(sub.channel, ChannelKind.PRESENCE, user_id, user_info)


def _as_signed_in_user(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    if user is None:
        raise SubscriptionAuthError(
            sub.channel, "A presence subscription needs channel_data (or a signed-in user)."
        )
    if not token_matches(app.key, app.secret, sub.auth, channel_string(socket_id, sub.channel)):
        raise SubscriptionAuthError(sub.channel)
    check_user_info_size(app, sub.channel, user.user_info)
    return Membership(sub.channel, ChannelKind.PRESENCE, user.id, user.user_info)


def parse_channel_data(channel: str, channel_data: str) -> tuple[str, Any]:
    """(user_id as a string, user_info or None); SubscriptionAuthError when malformed."""
    try:
        data = orjson.loads(channel_data)
    except orjson.JSONDecodeError:
        raise SubscriptionAuthError(channel, "channel_data is not valid JSON.") from None
    if not isinstance(data, dict):
        raise SubscriptionAuthError(channel, "channel_data must be a JSON object.")
    return normalise_user_id(channel, data.get("user_id")), data.get("user_info")


def normalise_user_id(channel: str, raw: object) -> str:
    # bool is an int subclass, and True is no user id.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str) and raw:
        return raw
    raise SubscriptionAuthError(
        channel, "channel_data must contain a user_id (a non-empty string or a number)."
    )


def check_user_info_size(app: AppSettings, channel: str, user_info: Any) -> None:
    if user_info is None:
        return
    size = len(orjson.dumps(user_info))
    if size > app.max_user_info_bytes:
        raise UserInfoTooLarge(
            channel,
            f"The user info is too large: {size} bytes, at most {app.max_user_info_bytes}.",
        )
