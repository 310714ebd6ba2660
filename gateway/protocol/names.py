"""Channel and event names: which kind a channel is, and whether a name is allowed."""

from __future__ import annotations

import enum
import re

from gateway.protocol.errors import BadRequest

MAX_CHANNEL_NAME = 200
MAX_EVENT_NAME = 200
USER_CHANNEL_PREFIX = "#server-to-user-"

_CHANNEL_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
_SOCKET_ID_RE = re.compile(r"\d+\.\d+")
RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")


class ChannelKind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    USER = "user"

    @property
    def needs_auth(self) -> bool:
        return self in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)


def channel_kind(name: str) -> ChannelKind:
    # Order matters: "private-encrypted-" is also "private-".
    if name.startswith("presence-"):
        return ChannelKind.PRESENCE
    if name.startswith("private-encrypted-"):
        return ChannelKind.ENCRYPTED
    if name.startswith("private-"):
        return ChannelKind.PRIVATE
    if name.startswith(USER_CHANNEL_PREFIX):
        return ChannelKind.USER
    return ChannelKind.PUBLIC


def is_cache_channel(name: str) -> bool:
    return name.startswith(
        ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")
    )


def channel_name_problem(name: object, max_length: int = MAX_CHANNEL_NAME) -> str | None:
    """Why ``name`` is not an acceptable channel name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "The channel name must be a non-empty string."
    if len(name) > max_length:
        return f"The channel name is longer than the allowed {max_length} characters."
    body = name[len(USER_CHANNEL_PREFIX) :] if name.startswith(USER_CHANNEL_PREFIX) else name
    if not _CHANNEL_RE.fullmatch(body):
        return "The channel name is not allowed: use only A-Z a-z 0-9 _ - = @ , . ;"
    return None


def check_channel_name(name: object, max_length: int = MAX_CHANNEL_NAME) -> str:
    problem = channel_name_problem(name, max_length)
    if problem:
        raise BadRequest(f"{problem} ({str(name)[:60]!r})")
    return name  # type: ignore[return-value]


def event_name_problem(name: object, *, from_api: bool = True) -> str | None:
    """Why ``name`` is not an acceptable event name. Characters are not restricted (Laravel
    publishes class names such as ``App\\Events\\Foo``); only length and reserved prefixes."""
    if not isinstance(name, str) or not name:
        return "The event name must be a non-empty string."
    if len(name) > MAX_EVENT_NAME:
        return f"The event name is longer than the allowed {MAX_EVENT_NAME} characters."
    if from_api and name.startswith(RESERVED_EVENT_PREFIXES):
        return "Only the server may publish events with the prefix pusher: or pusher_internal:."
    return None


def is_socket_id(value: object) -> bool:
    return isinstance(value, str) and _SOCKET_ID_RE.fullmatch(value) is not None
