"""Channel and event names."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.errors import BadRequest
from gateway.protocol.names import (
    ChannelKind,
    channel_kind,
    channel_name_problem,
    check_channel_name,
    event_name_problem,
    is_cache_channel,
    is_socket_id,
)

ALLOWED = "-_=@,.;" + string.ascii_letters + string.digits


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("my-channel", ChannelKind.PUBLIC),
        ("cache-x", ChannelKind.PUBLIC),
        ("private-x", ChannelKind.PRIVATE),
        ("private-cache-x", ChannelKind.PRIVATE),
        ("private-encrypted-x", ChannelKind.ENCRYPTED),
        ("private-encrypted-cache-x", ChannelKind.ENCRYPTED),
        ("presence-x", ChannelKind.PRESENCE),
        ("presence-cache-x", ChannelKind.PRESENCE),
        ("#server-to-user-42", ChannelKind.USER),
        ("privatex", ChannelKind.PUBLIC),
    ],
)
def test_channel_kind(name: str, kind: ChannelKind) -> None:
    assert channel_kind(name) is kind
    assert kind.needs_auth == (kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED,
                                        ChannelKind.PRESENCE))


def test_cache_channels() -> None:
    assert all(is_cache_channel(n) for n in
               ["cache-a", "private-cache-a", "private-encrypted-cache-a", "presence-cache-a"])
    assert not any(is_cache_channel(n) for n in ["a-cache-", "private-a", "presencecache-a"])


@given(st.text(alphabet=ALLOWED, min_size=1, max_size=200))
def test_allowed_names_are_accepted(name: str) -> None:
    assert channel_name_problem(name) is None
    assert check_channel_name(name) == name


@given(st.text(min_size=1, max_size=60).filter(lambda s: any(c not in ALLOWED for c in s)))
def test_names_with_other_characters_are_refused(name: str) -> None:
    if name.startswith("#server-to-user-") and all(c in ALLOWED for c in name[16:]) and name[16:]:
        return
    assert channel_name_problem(name) is not None
    with pytest.raises(BadRequest):
        check_channel_name(name)


def test_length_limit() -> None:
    assert channel_name_problem("a" * 200) is None
    assert "longer than the allowed 200" in channel_name_problem("a" * 201)
    assert channel_name_problem("a" * 11, max_length=10) is not None


@pytest.mark.parametrize("bad", [None, "", 5, ["a"], "#server-to-user-", "#a"])
def test_not_a_name(bad: object) -> None:
    assert channel_name_problem(bad) is not None


def test_event_names() -> None:
    assert event_name_problem("App\\Events\\ChatMessage") is None  # Laravel class names
    assert event_name_problem("e" * 200) is None
    assert event_name_problem("e" * 201) is not None
    assert event_name_problem("") is not None
    assert event_name_problem(3) is not None
    assert event_name_problem("pusher:subscribe") is not None
    assert event_name_problem("pusher_internal:member_added") is not None
    assert event_name_problem("client-x", from_api=False) is None


@given(st.from_regex(r"\d{1,12}\.\d{1,12}", fullmatch=True))
def test_socket_ids(value: str) -> None:
    assert is_socket_id(value)


@pytest.mark.parametrize("bad", ["1", "1.", ".1", "a.b", "1.2.3", "1.2\n", None, 1.2])
def test_bad_socket_ids(bad: object) -> None:
    assert not is_socket_id(bad)
