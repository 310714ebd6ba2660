"""Nested or hostile JSON to every endpoint that takes a JSON body (Channels REST events and
batches, the webhooks operator API, the Beams device and publish APIs): a 400 whose JSON body
says what is wrong, never a 500 and never a body read some other way than it was written.
Hypothesis drives the real Flask app (one app for both APIs, as `clarion api` serves it) on a
real Redis."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.settings import Settings
from tests.api.api_harness import APP, queued_tasks, signed

BEAMS_AUTH = {"Authorization": f"Bearer {APP['secret']}", "Content-Type": "application/json"}
DEVICES = f"/device_api/v1/instances/{APP['id']}/devices/fcm"
PUBLISH = f"/publish_api/v1/instances/{APP['id']}/publishes"
BODY_LIMIT = 64 * 1024
MAX_DEPTH = 32  # the parser's limit (gateway/api/jsonbody.py), documented in docs/api.md


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    # Beams' publish rate limit and body caps out of the way: only the parser decides here.
    return Settings(
        redis={"url": redis_url, "key_prefix": key_prefix},
        apps=[APP],
        api={"max_body_bytes": BODY_LIMIT},
        push={"publish_rate_limit": 1_000_000, "max_interests_body_bytes": BODY_LIMIT,
              "max_users_body_bytes": BODY_LIMIT},
    )


@pytest.fixture
def device(client) -> str:
    r = client.post(DEVICES, json={"token": "hostile-json-device-token"})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["id"]


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    name: str
    base: dict[str, Any]  # a body the endpoint accepts
    send: Callable[[Any, str, bytes], Any]  # (client, device id, raw body) -> response
    beams: bool = False


def _channels(path: str) -> Callable[[Any, str, bytes], Any]:
    return lambda client, _dev, raw: signed(client, "POST", path, APP, raw=raw)


def _beams(method: str, path: str, auth: bool = False) -> Callable[[Any, str, bytes], Any]:
    headers = BEAMS_AUTH if auth else {"Content-Type": "application/json"}
    return lambda client, dev, raw: client.open(path.format(dev=dev), method=method, data=raw,
                                                headers=headers)


ENDPOINTS = [
    Endpoint("events", {"name": "e", "channels": ["c"], "data": "d"},
             _channels("/apps/1/events")),
    Endpoint("batch_events", {"batch": [{"name": "e", "channel": "c", "data": "d"}]},
             _channels("/apps/1/batch_events")),
    Endpoint("webhooks replay", {"status": "dead"}, _channels("/apps/1/webhooks/replay")),
    Endpoint("publish interests", {"interests": ["news"], "fcm": {"notification": {"t": "x"}}},
             _beams("POST", PUBLISH + "/interests", auth=True), beams=True),
    Endpoint("publish users", {"users": ["u1"], "fcm": {"data": {"k": "v"}}},
             _beams("POST", PUBLISH + "/users", auth=True), beams=True),
    Endpoint("device register", {"token": "t-hostile", "metadata": {"sdkVersion": "1"}},
             _beams("POST", DEVICES), beams=True),
    Endpoint("device metadata", {"sdkVersion": "2"},
             _beams("PUT", DEVICES + "/{dev}/metadata"), beams=True),
    Endpoint("device token", {"token": "t-new"}, _beams("PUT", DEVICES + "/{dev}/token"),
             beams=True),
    Endpoint("device interests", {"interests": ["a"]},
             _beams("PUT", DEVICES + "/{dev}/interests"), beams=True),
]
endpoints = st.sampled_from(ENDPOINTS)


# --------------------------------------------------------------------------- hostile bodies


def with_extra(base: dict[str, Any], value: bytes) -> bytes:
    """``base`` with one more member whose value is the raw bytes ``value``."""
    return orjson.dumps(base)[:-1] + b',"x":' + value + b"}"


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


deep = st.builds(nested, st.integers(MAX_DEPTH + 1, 10_000), st.sampled_from(["array", "object"]))
huge_int = st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1)).map(
    lambda n: str(n).encode())
non_finite = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-2.5e999"])
bad_utf8 = st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80abc", b"\xf8\x88\x80\x80"]
                           ).map(lambda b: b'"' + b + b'"')
lone_surrogate = st.sampled_from([b'"\\ud800"', b'"\\udfff x"', b'"a\\ud83d"'])

# (strategy of the hostile value, a fragment the error must contain)
HOSTILE_VALUES = [
    (deep, ("nested deeper", "depth limit")),
    (huge_int, ("64 bits", "infinity")),
    (non_finite, ("not valid JSON",)),
    (bad_utf8, ("UTF-8",)),
    (lone_surrogate, ("surrogate",)),
]


@st.composite
def hostile_body(draw: Any, endpoint: Endpoint) -> tuple[bytes, tuple[str, ...]]:
    kind = draw(st.sampled_from(["value", "duplicate", "top-level"]))
    if kind == "value":
        strategy, fragments = draw(st.sampled_from(HOSTILE_VALUES))
        return with_extra(endpoint.base, draw(strategy)), fragments
    if kind == "duplicate":
        key = draw(st.sampled_from(sorted(endpoint.base)))
        first = orjson.dumps({key: endpoint.base[key]})[1:-1]
        return b"{" + first + b"," + orjson.dumps(endpoint.base)[1:], ("duplicate key",)
    top = draw(st.sampled_from([b"[]", b'"a string"', b"1", b"null", b"true",
                                orjson.dumps([endpoint.base])]))
    return top, ("must be a JSON object",)


def assert_400(endpoint: Endpoint, response: Any, fragments: tuple[str, ...]) -> None:
    body = response.get_json()
    assert response.status_code == 400, (endpoint.name, response.status_code, body)
    text = body["description"] if endpoint.beams else body["error"]
    if endpoint.beams:
        assert body["error"] == "Bad Request", body
    else:
        assert body["code"] == 400, body
    assert any(f in text for f in fragments), (endpoint.name, text, fragments)


HYPOTHESIS = hsettings(max_examples=300, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow])


@HYPOTHESIS
@given(data=st.data())
def test_hostile_json_is_400_with_a_reason(client, device, data):
    endpoint = data.draw(endpoints)
    raw, fragments = data.draw(hostile_body(endpoint))
    assert_400(endpoint, endpoint.send(client, device, raw), fragments)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 1024, 1025, 5000, 10_000])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_deep_nesting_at_the_parser_limits(client, device, endpoint, depth):
    """Around orjson's own limit (1024) and far past the stdlib's recursion limit. The same
    body is taken as it is, and nested up to the limit."""
    r = endpoint.send(client, device, with_extra(endpoint.base, nested(MAX_DEPTH - 1, "array")))
    assert r.status_code == 200, (endpoint.name, r.get_json())
    for kind in ("array", "object"):
        assert_400(endpoint, endpoint.send(client, device, with_extra(endpoint.base,
                                                                      nested(depth, kind))),
                   ("nested deeper", "depth limit"))


def test_duplicate_keys_do_not_publish(client, redis_client, key_prefix):
    """Two names in one publish: refused, nothing queued (before, the last one was sent)."""
    raw = b'{"name":"safe","channels":["c"],"data":"d","name":"other"}'
    r = signed(client, "POST", "/apps/1/events", APP, raw=raw)
    assert r.status_code == 400 and "duplicate key 'name'" in r.get_json()["error"]
    assert queued_tasks(redis_client, key_prefix) == []


def test_unparsable_replay_body_replays_nothing(client):
    """It used to be read as "no filter": every dead delivery replayed."""
    for raw in (b"{not json", b"[]", b'{"status":"dead"', b"\xff"):
        r = signed(client, "POST", "/apps/1/webhooks/replay", APP, raw=raw)
        assert r.status_code == 400, r.get_json()
    r = signed(client, "POST", "/apps/1/webhooks/replay", APP, raw=b"")
    assert r.status_code == 200 and r.get_json() == {"replayed": 0, "ids": []}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def wrapped(value: Any, depth: int) -> bytes:
    """``value`` inside ``depth`` arrays."""
    return b"[" * depth + orjson.dumps(value) + b"]" * depth


@HYPOTHESIS
@given(data=st.data())
def test_any_body_is_answered_below_500_in_json(client, device, data):
    """Arbitrary bytes and arbitrary JSON documents, valid or not for the endpoint."""
    endpoint = data.draw(endpoints)
    raw = data.draw(st.one_of(st.binary(max_size=300),
                              json_values.map(lambda v: orjson.dumps(v)),
                              st.builds(wrapped, json_values, st.integers(0, 3000))))
    r = endpoint.send(client, device, raw)
    assert r.status_code < 500, (endpoint.name, raw, r.get_json())
    assert isinstance(r.get_json(), dict)
