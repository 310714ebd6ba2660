"""Channel authorisation: pure functions, the reference signatures, forged and mismatched ones."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import AppSettings
from gateway import channels
from gateway.channels import cache, presence
from gateway.channels import user as user_auth
from gateway.channels.membership import SignedInUser
from gateway.protocol.errors import (
    SubscriptionAuthError,
    Unauthorized,
    UserInfoTooLarge,
)
from gateway.protocol.messages import Signin, Subscribe
from gateway.protocol.names import ChannelKind
from gateway.protocol.signatures import auth_token, channel_string, user_string

KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"
APP = AppSettings(id="3", key=KEY, secret=SECRET)
SOCKET = "1234.1234"


def token(message: str, key: str = KEY, secret: str = SECRET) -> str:
    return auth_token(key, secret, message)


def sub(channel: str, auth: str | None = None, channel_data: str | None = None) -> Subscribe:
    return Subscribe(channel, auth, channel_data)


# --------------------------------------------------------------------------- public


def test_public_needs_no_auth() -> None:
    m = channels.authorise(APP, SOCKET, sub("news"))
    assert (m.channel, m.kind, m.user_id, m.cache) == ("news", ChannelKind.PUBLIC, None, False)
    assert not m.accepts_client_events


# --------------------------------------------------------------------------- private


def test_private_reference_vector() -> None:
    auth = f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    m = channels.authorise(APP, SOCKET, sub("private-foobar", auth))
    assert m.kind is ChannelKind.PRIVATE
    assert m.accepts_client_events


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "no-colon",
        token("1234.1234:private-other"),  # signed for another channel
        token("9999.1:private-foobar"),  # signed for another socket
        token("1234.1234:private-foobar", key="otherkey"),  # mismatched key
        token("1234.1234:private-foobar", secret="othersecret"),  # forged
        f"{KEY}:" + "0" * 64,
    ],
)
def test_private_refuses_bad_auth(auth: str | None) -> None:
    with pytest.raises(SubscriptionAuthError) as info:
        channels.authorise(APP, SOCKET, sub("private-foobar", auth))
    assert info.value.channel == "private-foobar"
    assert info.value.status == 401


def test_encrypted_uses_private_auth_and_refuses_client_events() -> None:
    name = "private-encrypted-room"
    m = channels.authorise(APP, SOCKET, sub(name, token(channel_string(SOCKET, name))))
    assert m.kind is ChannelKind.ENCRYPTED
    assert not m.accepts_client_events
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub(name, token(channel_string(SOCKET, "private-room"))))


# --------------------------------------------------------------------------- presence


def presence_sub(channel: str, channel_data: str, socket_id: str = SOCKET) -> Subscribe:
    return sub(channel, token(channel_string(socket_id, channel, channel_data)), channel_data)


def test_presence_reference_vector_numeric_user_id() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
    auth = f"{KEY}:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
    m = channels.authorise(APP, SOCKET, sub("presence-foobar", auth, data))
    assert m.kind is ChannelKind.PRESENCE
    assert m.user_id == "10"  # normalised to a string
    assert m.user_info == {"name": "Mr. Pusher"}
    assert m.accepts_client_events


def test_presence_verifies_the_exact_string_python_sdk_style() -> None:
    # The Python SDK signs json.dumps output (with spaces): never re-serialise before verifying.
    data = json.dumps({"user_id": "u1", "user_info": {"name": "A"}})
    assert ", " in data
    m = channels.authorise(APP, SOCKET, presence_sub("presence-x", data))
    assert (m.user_id, m.user_info) == ("u1", {"name": "A"})


def test_presence_without_user_info() -> None:
    m = channels.authorise(APP, SOCKET, presence_sub("presence-x", '{"user_id":"7"}'))
    assert (m.user_id, m.user_info) == ("7", None)


def test_presence_signature_over_other_channel_data_is_refused() -> None:
    signed = '{"user_id":"1"}'
    auth = token(channel_string(SOCKET, "presence-x", signed))
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub("presence-x", auth, '{"user_id":"2"}'))


@pytest.mark.parametrize(
    "data",
    ["not json", "[1,2]", '"str"', "{}", '{"user_id":""}', '{"user_id":null}',
     '{"user_id":true}', '{"user_id":1.5}', '{"user_id":{"a":1}}'],
)
def test_presence_refuses_malformed_channel_data(data: str) -> None:
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, presence_sub("presence-x", data))


def test_presence_user_info_limit() -> None:
    app = AppSettings(id="3", key=KEY, secret=SECRET, max_user_info_bytes=20)
    ok = '{"user_id":"1","user_info":{"n":"short"}}'
    assert channels.authorise(app, SOCKET, presence_sub("presence-x", ok)).user_id == "1"
    big = json.dumps({"user_id": "1", "user_info": {"n": "x" * 40}})
    with pytest.raises(UserInfoTooLarge) as info:
        channels.authorise(app, SOCKET, presence_sub("presence-x", big))
    assert info.value.type == "LimitReached"


def test_presence_without_channel_data_uses_signed_in_user() -> None:
    user = SignedInUser("42", {"name": "Z"}, '{"id":"42"}')
    auth = token(channel_string(SOCKET, "presence-x"))
    m = channels.authorise(APP, SOCKET, sub("presence-x", auth), user)
    assert (m.user_id, m.user_info) == ("42", {"name": "Z"})
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub("presence-x", auth), None)


@given(
    user_id=st.one_of(
        st.text(min_size=1, max_size=40),
        st.integers(min_value=-(10**12), max_value=10**12),
    ),
    # JSON numbers beyond 2**53 are not exact anywhere (orjson reads them as floats).
    info=st.one_of(st.none(), st.dictionaries(
        st.text(max_size=5), st.integers(min_value=-(2**53), max_value=2**53), max_size=3)),
    compact=st.booleans(),
)
def test_presence_roundtrip_any_user_id(user_id: object, info: object, compact: bool) -> None:
    payload = {"user_id": user_id} if info is None else {"user_id": user_id, "user_info": info}
    data = json.dumps(payload, separators=(",", ":") if compact else None)
    m = channels.authorise(APP, SOCKET, presence_sub("presence-h", data))
    assert m.user_id == str(user_id)
    assert m.user_info == info
    assert presence.parse_channel_data("presence-h", data) == (str(user_id), info)


@given(st.text(min_size=1, max_size=64))
def test_forged_signatures_never_pass(digest: str) -> None:
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub("private-p", f"{KEY}:{digest}"))


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("cache-news", ChannelKind.PUBLIC),
        ("private-cache-x", ChannelKind.PRIVATE),
        ("private-encrypted-cache-x", ChannelKind.ENCRYPTED),
        ("presence-cache-x", ChannelKind.PRESENCE),
    ],
)
def test_cache_channels_authorise_as_their_base_kind(name: str, kind: ChannelKind) -> None:
    if kind is ChannelKind.PUBLIC:
        s = sub(name)
    elif kind is ChannelKind.PRESENCE:
        s = presence_sub(name, '{"user_id":"1"}')
    else:
        s = sub(name, token(channel_string(SOCKET, name)))
    m = channels.authorise(APP, SOCKET, s)
    assert m.kind is kind
    assert m.cache
    # Replayed unless the node has not delivered that serial yet (then it comes live).
    assert cache.replay_after_subscribe(5, 5) and cache.replay_after_subscribe(5, None)
    assert not cache.replay_after_subscribe(6, 5)


# --------------------------------------------------------------------------- user


def signin(user_data: str, socket_id: str = SOCKET, **kw: str) -> Signin:
    return Signin(token(user_string(socket_id, user_data), **kw), user_data)


def test_signin_reference_vector() -> None:
    auth = f"{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    user = user_auth.sign_in(APP, SOCKET, Signin(auth, '{"id":"12345"}'))
    assert user == SignedInUser("12345", None, '{"id":"12345"}')


@pytest.mark.parametrize(
    "data", ['{"id":12345}', '{"id":""}', "{}", "[]", "nope", '{"user_id":"1"}']
)
def test_signin_refuses_bad_user_data(data: str) -> None:
    with pytest.raises(Unauthorized) as info:
        user_auth.sign_in(APP, SOCKET, signin(data))
    assert info.value.code == 4009 and info.value.close


def test_signin_refuses_bad_signature_and_other_user() -> None:
    with pytest.raises(Unauthorized):
        user_auth.sign_in(APP, SOCKET, signin('{"id":"1"}', secret="wrong"))
    with pytest.raises(Unauthorized):
        user_auth.sign_in(APP, "1.2", signin('{"id":"1"}'))
    current = SignedInUser("1")
    with pytest.raises(Unauthorized):
        user_auth.sign_in(APP, SOCKET, signin('{"id":"2"}'), current)
    again = user_auth.sign_in(APP, SOCKET, signin('{"id":"1","user_info":{"a":1}}'), current)
    assert again.id == "1" and again.user_info == {"a": 1}


def test_signin_disabled_for_app() -> None:
    app = AppSettings(id="3", key=KEY, secret=SECRET, user_authentication=False)
    with pytest.raises(Unauthorized):
        user_auth.sign_in(app, SOCKET, signin('{"id":"1"}'))


def test_server_to_user_channel_only_for_that_user() -> None:
    name = user_auth.channel_for("42")
    assert name == "#server-to-user-42"
    m = channels.authorise(APP, SOCKET, sub(name, ""), SignedInUser("42"))
    assert m.kind is ChannelKind.USER
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub(name, ""), None)
    with pytest.raises(SubscriptionAuthError):
        channels.authorise(APP, SOCKET, sub(name, ""), SignedInUser("43"))
