"""What a successful channel authorisation yields: who is on which channel, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.protocol.names import ChannelKind


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """A connection's identity after ``pusher:signin`` (user authentication)."""

    id: str
    user_info: Any = None
    # The exact string that was signed, echoed in pusher:signin_success.
    user_data: str = ""
    # user_data.watchlist: the user ids whose online/offline this connection is told of
    # (at most MAX_WATCHLIST; ``watchlist_truncated`` when more were given: error 4302).
    watchlist: tuple[str, ...] = ()
    watchlist_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Membership:
    """A connection's authorised subscription to one channel."""

    channel: str
    kind: ChannelKind
    # Presence channels: the member this connection counts as (a string, whatever the app sent).
    user_id: str | None = None
    user_info: Any = None
    # cache-, private-cache-, ... : the last event is replayed on subscribe (see cache.py).
    cache: bool = False

    @property
    def accepts_client_events(self) -> bool:
        # Pusher: client events on private and presence channels only. Encrypted channels are
        # excluded because the server cannot vouch for payloads it cannot read.
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)
