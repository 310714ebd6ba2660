"""Server frames: exact shapes that pusher-js and pysher depend on."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import frames
from gateway.protocol.errors import (
    AppNotFound,
    ClientEventRejected,
    InvalidMessage,
    SubscriptionAuthError,
    SubscriptionLimitReached,
)


def test_connection_established_data_is_a_string() -> None:
    frame = json.loads(frames.connection_established("123.456", 30))
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)  # pysher json.loads it
    assert json.loads(frame["data"]) == {"socket_id": "123.456", "activity_timeout": 30}


def test_error_data_is_an_object() -> None:
    frame = json.loads(frames.from_error(AppNotFound()))
    assert frame == {"event": "pusher:error",
                     "data": {"code": 4001, "message": "Application does not exist"}}
    assert json.loads(frames.from_error(InvalidMessage("bad")))["data"] == {
        "code": None, "message": "bad"}
    assert json.loads(frames.from_error(ClientEventRejected()))["data"]["code"] == 4301


def test_subscription_error_shape() -> None:
    frame = json.loads(frames.subscription_error(SubscriptionAuthError("private-a")))
    assert frame == {"event": "pusher:subscription_error", "channel": "private-a",
                     "data": {"type": "AuthError", "error": "The connection is unauthorized.",
                              "status": 401}}
    limit = json.loads(frames.subscription_error(SubscriptionLimitReached("presence-a")))
    assert limit["data"]["type"] == "LimitReached" and limit["data"]["status"] == 4100


def test_subscription_succeeded() -> None:
    assert json.loads(frames.subscription_succeeded("a")) == {
        "event": "pusher_internal:subscription_succeeded", "channel": "a", "data": "{}"}


def test_presence_subscription_succeeded() -> None:
    members = {"1": {"name": "a"}, "2": None}
    frame = json.loads(frames.presence_subscription_succeeded("presence-a", members))
    presence = json.loads(frame["data"])["presence"]
    assert presence == {"ids": ["1", "2"], "hash": members, "count": 2}


def test_member_events() -> None:
    assert json.loads(frames.member_added_data("7", {"n": 1})) == {"user_id": "7",
                                                                   "user_info": {"n": 1}}
    assert json.loads(frames.member_added_data("7", None)) == {"user_id": "7"}
    assert json.loads(frames.member_removed_data("7")) == {"user_id": "7"}


@given(st.text(max_size=300))
def test_channel_event_relays_data_verbatim(data: str) -> None:
    frame = json.loads(frames.channel_event("my-event", "ch", data))
    assert frame == {"event": "my-event", "channel": "ch", "data": data}


def test_channel_event_with_user_id() -> None:
    frame = json.loads(frames.channel_event("client-a", "presence-a", {"x": 1}, user_id="9"))
    assert frame == {"event": "client-a", "channel": "presence-a", "data": {"x": 1},
                     "user_id": "9"}


def test_pong_signin_cache_miss() -> None:
    assert json.loads(frames.pong()) == {"event": "pusher:pong", "data": "{}"}
    assert json.loads(frames.signin_success('{"id":"1"}')) == {
        "event": "pusher:signin_success", "data": {"user_data": '{"id":"1"}'}}
    assert json.loads(frames.cache_miss("cache-a")) == {"event": "pusher:cache_miss",
                                                         "channel": "cache-a"}
