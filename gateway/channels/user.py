"""User authentication (``pusher:signin``) and the ``#server-to-user-{id}`` channel.

Sign-in: ``auth`` is ``<key>:HMAC(secret, "<socket_id>::user::<user_data>")`` over the exact
``user_data`` string, which must be a JSON object with a non-empty string ``id`` (pusher-js
treats a numeric id as a failed sign-in, so we refuse it too). Any failure is fatal: 4009.

``user_data.watchlist`` (optional) lists user ids whose online / offline status the connection
is told of (``pusher_internal:watchlist_events``); only the first 100 are used.

The server-to-user channel may only be subscribed by a connection signed in as that user;
pusher-js subscribes with an empty ``auth`` right after ``pusher:signin_success``.
"""

from __future__ import annotations

import orjson

from config.settings import AppSettings
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol.errors import SubscriptionAuthError, Unauthorized
from gateway.protocol.messages import Signin, Subscribe
from gateway.protocol.names import USER_CHANNEL_PREFIX, ChannelKind
from gateway.protocol.signatures import token_matches, user_string

MAX_WATCHLIST = 100


def sign_in(
    app: AppSettings, socket_id: str, signin: Signin, current: SignedInUser | None = None
) -> SignedInUser:
    """The signed-in user, or Unauthorized (4009, closes the connection)."""
    if not app.user_authentication:
        raise Unauthorized("User authentication is disabled for this app.")
    message = user_string(socket_id, signin.user_data)
    if not token_matches(app.key, app.secret, signin.auth, message):
        raise Unauthorized("Connection not authorized: invalid signature for pusher:signin.")
    try:
        data = orjson.loads(signin.user_data)
    except orjson.JSONDecodeError:
        raise Unauthorized("The user data is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Unauthorized("The user data must be a JSON object.")
    user_id = data.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise Unauthorized('The returned user data must contain the "id" field (a string).')
    if current is not None and current.id != user_id:
        raise Unauthorized("The connection is already signed in as another user.")
    watchlist, truncated = parse_watchlist(data.get("watchlist"))
    return SignedInUser(user_id, data.get("user_info"), signin.user_data, watchlist, truncated)


def parse_watchlist(raw: object) -> tuple[tuple[str, ...], bool]:
    """The watched user ids (strings; numbers normalised, anything else and duplicates
    dropped), at most MAX_WATCHLIST; and whether more were given (Pusher: error 4302)."""
    if not isinstance(raw, list):
        return (), False
    ids: list[str] = []
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if isinstance(item, str) and item and item not in ids:
            ids.append(item)
    return tuple(ids[:MAX_WATCHLIST]), len(ids) > MAX_WATCHLIST


def channel_for(user_id: str) -> str:
    return USER_CHANNEL_PREFIX + user_id


def authorise(
    app: AppSettings, socket_id: str, sub: Subscribe, user: SignedInUser | None
) -> Membership:
    if user is None or sub.channel != channel_for(user.id):
        raise SubscriptionAuthError(
            sub.channel, "Only a connection signed in as this user may subscribe."
        )
    return Membership(sub.channel, ChannelKind.USER, user.id, user.user_info)
