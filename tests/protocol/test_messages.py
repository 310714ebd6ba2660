"""Client messages: what pusher-js and pysher send, and everything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import messages as m
from gateway.protocol.errors import InvalidMessage


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"event": "pusher:ping", "data": {}}, m.Ping()),
        ({"event": "pusher:ping", "data": ""}, m.Ping()),  # pysher
        ({"event": "pusher:pong"}, m.Pong()),
        ({"event": "pusher:subscribe", "data": {"auth": "", "channel": "a"}}, m.Subscribe("a")),
        ({"event": "pusher:subscribe", "data": {"channel": "a"}}, m.Subscribe("a")),  # pysher
        ({"event": "pusher:subscribe",
          "data": {"auth": "k:s", "channel": "presence-a", "channel_data": '{"user_id":1}'}},
         m.Subscribe("presence-a", "k:s", '{"user_id":1}')),
        ({"event": "pusher:subscribe", "data": json.dumps({"channel": "a"})}, m.Subscribe("a")),
        ({"event": "pusher:unsubscribe", "data": {"channel": "a"}}, m.Unsubscribe("a")),
        ({"event": "pusher:signin", "data": {"auth": "k:s", "user_data": '{"id":"1"}'}},
         m.Signin("k:s", '{"id":"1"}')),
        ({"event": "client-typing", "channel": "private-a", "data": {"x": 1}},
         m.ClientEvent("client-typing", "private-a", {"x": 1})),
        ({"event": "pusher:something_new", "data": {}}, m.UnknownEvent("pusher:something_new")),
        ({"event": "other", "data": {}}, m.UnknownEvent("other")),
    ],
)
def test_parse(frame: dict, expected: m.ClientMessage) -> None:
    assert m.parse(json.dumps(frame)) == expected
    assert m.parse(json.dumps(frame).encode()) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not valid JSON"),
        ("[1,2]", "JSON object"),
        ("{}", "missing event"),
        ('{"event": 5}', "missing event"),
        ('{"event": "pusher:subscribe"}', "data object"),
        ('{"event": "pusher:subscribe", "data": {"channel": 5}}', "channel"),
        ('{"event": "pusher:subscribe", "data": {"channel": "a", "auth": 5}}', "auth"),
        ('{"event": "pusher:subscribe", "data": {"channel": "p", "channel_data": {"u": 1}}}',
         "channel_data"),
        ('{"event": "pusher:unsubscribe", "data": {}}', "channel"),
        ('{"event": "pusher:signin", "data": {"auth": "a"}}', "user_data"),
        ('{"event": "client-x", "data": {}}', "channel"),
    ],
)
def test_malformed(text: str, match: str) -> None:
    with pytest.raises(InvalidMessage, match=match):
        m.parse(text)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_fail_cleanly(raw: bytes) -> None:
    try:
        m.parse(raw)
    except InvalidMessage:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@given(event=st.sampled_from(["pusher:subscribe", "pusher:unsubscribe", "pusher:signin",
                              "pusher:ping", "client-a"]),
       data=json_values, channel=json_values)
def test_any_json_shape_parses_or_fails_cleanly(event: str, data: object, channel: object) -> None:
    try:
        m.parse(json.dumps({"event": event, "data": data, "channel": channel}))
    except InvalidMessage:
        pass
