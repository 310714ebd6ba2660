"""Idempotent publish: a request repeated with its idempotency key (header or body field)
within the window is answered like the first and accepts nothing; a different request with
the key is refused with 422. Real Redis; the official SDK or signed requests."""

from __future__ import annotations

import json
import threading
import time
import uuid

import orjson
import pusher
import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pusher.http import POST, Request

from gateway.api import idempotency
from gateway.api.idempotency import HEADER, REPLAYED_HEADER
from gateway.protocol.signatures import sign_rest_request
from gateway.state.idempotency import IdempotencyClaim
from tests.api.api_harness import APP, SMALL, queued_tasks

_FN_SCOPED = [HealthCheck.function_scoped_fixture]
KEY_ALPHABET = "abcXYZ0189_.:~+/=@-"


def _event(channel: str = "c", data: str = "d", **extra: object) -> dict:
    return {"name": "e", "channel": channel, "data": data, **extra}


def _post(client, body: dict, key: str | None = None, path: str = "/apps/1/events",
          app: dict = APP):
    """A signed publish through the Flask test client, the key in the header if given."""
    raw = orjson.dumps(body)
    q = sign_rest_request(app["key"], app["secret"], "POST", path, {}, raw, int(time.time()))
    headers = {HEADER: key} if key is not None else {}
    return client.post(path, query_string=q, data=raw, content_type="application/json",
                       headers=headers)


def _logged(redis_client, keys, channel: str, app_id: str = "1") -> int:
    return redis_client.zcard(keys.history(app_id, channel))


def _sdk_post(sdk: pusher.Pusher, path: str, body: dict, headers: dict | None = None):
    """A POST built and signed by the SDK's Request (its generic request), sent with
    ``requests`` so that the test sees the status and headers."""
    req = Request(sdk._pusher_client, POST, path, body)
    return requests.post(req.url, data=req.body, headers={**req.headers, **(headers or {})},
                         timeout=10)


# --------------------------------------------------------------------------- once


def test_sdk_header_key_twice_accepts_once(sdk, redis_client, keys, key_prefix):
    """The Python SDK sends the header through its HTTP session (any request library can)."""
    sdk._pusher_client.http.session.headers[HEADER] = "order-42-shipped"
    assert sdk.trigger("orders", "shipped", {"id": 42}) == {}
    assert sdk.trigger("orders", "shipped", {"id": 42}) == {}
    assert _logged(redis_client, keys, "orders") == 1
    assert len(queued_tasks(redis_client, key_prefix)) == 1


def test_body_field_twice_accepts_once_and_says_replayed(client, redis_client, keys):
    first = _post(client, _event("b", idempotency_key="k-1"))
    again = _post(client, _event("b", idempotency_key="k-1"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.data == again.data == b"{}"
    assert REPLAYED_HEADER not in first.headers and again.headers[REPLAYED_HEADER] == "true"
    assert _logged(redis_client, keys, "b") == 1


def test_header_then_body_field_is_the_same_request(client, redis_client, keys):
    assert _post(client, _event("hb"), key="k-2").status_code == 200
    again = _post(client, _event("hb", idempotency_key="k-2"))
    assert again.status_code == 200 and again.headers[REPLAYED_HEADER] == "true"
    assert _logged(redis_client, keys, "hb") == 1


def test_sdk_generic_request_body_field_on_batch(sdk, redis_client, keys):
    batch = [_event(f"bt-{i}", str(i)) for i in range(3)]
    body = {"batch": batch, "idempotency_key": "batch-1"}
    first = _sdk_post(sdk, "/apps/1/batch_events", body)
    again = _sdk_post(sdk, "/apps/1/batch_events", body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert [_logged(redis_client, keys, f"bt-{i}") for i in range(3)] == [1, 1, 1]


def test_without_a_key_nothing_changes(client, redis_client, keys, key_prefix):
    for _ in range(2):
        r = _post(client, _event("nokey"))
        assert r.status_code == 200 and REPLAYED_HEADER not in r.headers
    assert _logged(redis_client, keys, "nokey") == 2
    assert redis_client.keys(f"{key_prefix}idem:*") == []


def test_keys_are_per_app(client, redis_client, keys):
    assert _post(client, _event("pa"), key="shared").status_code == 200
    r = _post(client, _event("pa"), key="shared", path="/apps/3/events", app=SMALL)
    assert r.status_code == 200 and REPLAYED_HEADER not in r.headers
    # Each app's repeat is its own app's replay.
    assert _post(client, _event("pa"), key="shared").headers.get(REPLAYED_HEADER) == "true"
    r = _post(client, _event("pa"), key="shared", path="/apps/3/events", app=SMALL)
    assert r.headers.get(REPLAYED_HEADER) == "true"
    assert _logged(redis_client, keys, "pa", "1") == _logged(redis_client, keys, "pa", "3") == 1


def test_racing_duplicates_accept_once(sdk, redis_client, keys):
    """Eight threads send one request with one key at once (a threaded server, one Redis):
    one is accepted, every one is answered 200 {}."""
    start = threading.Barrier(8)
    statuses: list[tuple[int, bytes]] = []

    def send() -> None:
        start.wait()
        r = _sdk_post(sdk, "/apps/1/events", _event("race"), {HEADER: "race-key"})
        statuses.append((r.status_code, r.content))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert statuses == [(200, b"{}")] * 8
    assert _logged(redis_client, keys, "race") == 1


# --------------------------------------------------------------------------- refusals


def test_same_key_different_request_is_422(client, redis_client, keys):
    assert _post(client, _event("m", "one"), key="k-3").status_code == 200
    for body, path in [
        (_event("m", "two"), "/apps/1/events"),                      # other data
        (_event("other", "one"), "/apps/1/events"),                  # other channel
        (_event("m", "one", socket_id="1.2"), "/apps/1/events"),     # other exclusion
        (_event("m", "one", info="subscription_count"), "/apps/1/events"),
        ({"batch": [_event("m", "one")]}, "/apps/1/batch_events"),   # other endpoint
    ]:
        r = _post(client, body, key="k-3", path=path)
        assert r.status_code == 422, (body, r.get_json())
        assert r.get_json()["code"] == 422
        assert "k-3" in r.get_json()["error"] and "different request" in r.get_json()["error"]
    assert _logged(redis_client, keys, "m") == 1 and _logged(redis_client, keys, "other") == 0


def test_header_and_body_keys_must_agree(client):
    r = _post(client, _event(idempotency_key="a"), key="b")
    assert r.status_code == 400 and "differ" in r.get_json()["error"]


def test_key_inside_a_batch_item_is_refused(client, redis_client, keys):
    r = _post(client, {"batch": [_event("bi", idempotency_key="x")]},
              path="/apps/1/batch_events")
    assert r.status_code == 400 and "top level" in r.get_json()["error"]
    assert _logged(redis_client, keys, "bi") == 0


@pytest.mark.parametrize("key", ["", " ", "a b", "é", "k" * 256, "a\tb", "{x}", "a,b"])
def test_invalid_keys_are_400(client, key, redis_client, keys):
    r = _post(client, _event("inv", idempotency_key=key))
    assert r.status_code == 400 and "Invalid idempotency key" in r.get_json()["error"]
    assert _logged(redis_client, keys, "inv") == 0


@pytest.mark.parametrize("key", [7, ["k"], {"k": 1}, True, 1.5])
def test_non_string_body_keys_are_400(client, key):
    r = _post(client, _event(idempotency_key=key))
    assert r.status_code == 400 and "Invalid idempotency key" in r.get_json()["error"]


def test_null_body_key_is_no_key(client, redis_client, keys):
    for _ in range(2):
        assert _post(client, _event("null", idempotency_key=None)).status_code == 200
    assert _logged(redis_client, keys, "null") == 2


@given(key=st.text(max_size=300))
@hsettings(max_examples=60, deadline=None, suppress_health_check=_FN_SCOPED)
def test_any_key_text_is_taken_or_refused_with_a_reason(client, key):
    r = _post(client, _event(f"h-{uuid.uuid4().hex[:8]}", idempotency_key=key))
    ok = 1 <= len(key) <= 255 and all(c.isascii() and (c.isalnum() or c in "_.:~+/=@-")
                                      for c in key)
    assert r.status_code == (200 if ok else 400), r.get_json()


@given(key=st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=255),
       data=st.text(max_size=50))
@hsettings(max_examples=40, deadline=None, suppress_health_check=_FN_SCOPED)
def test_any_valid_key_replays(client, redis_client, keys, key, data):
    key = f"{uuid.uuid4().hex[:8]}{key}"[:255]  # fresh per example
    channel = f"v-{uuid.uuid4().hex[:8]}"
    first = _post(client, _event(channel, data), key=key)
    again = _post(client, _event(channel, data, idempotency_key=key))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert _logged(redis_client, keys, channel) == 1


# --------------------------------------------------------------------------- window, responses


def test_the_window_ends(client, redis_client, keys):
    """App 3's window is 1 s: the same key later is a new request."""
    path = "/apps/3/events"
    assert _post(client, _event("w"), key="win", path=path, app=SMALL).status_code == 200
    assert 0 < redis_client.pttl(keys.idempotency("3", "win")) <= 1000
    again = _post(client, _event("w"), key="win", path=path, app=SMALL)
    assert again.headers.get(REPLAYED_HEADER) == "true"
    time.sleep(1.1)
    late = _post(client, _event("w"), key="win", path=path, app=SMALL)
    assert late.status_code == 200 and REPLAYED_HEADER not in late.headers
    assert _logged(redis_client, keys, "w", "3") == 2


def test_default_window_is_the_deployments(client, redis_client, keys, settings):
    assert _post(client, _event("dw"), key="dw").status_code == 200
    ttl = redis_client.pttl(keys.idempotency("1", "dw"))
    assert settings.api.idempotency_window * 1000 - 5000 < ttl <= 300_000


def test_info_response_is_saved_and_replayed(client, node):
    """A repeat gets what the first request answered, not a fresh count."""
    node.subscribe("1", "counted", 3)
    body = _event("counted", info="subscription_count")
    first = _post(client, body, key="info-1")
    assert first.get_json() == {"channels": {"counted": {"subscription_count": 3}}}
    node.subscribe("1", "counted", 5)
    again = _post(client, body, key="info-1")
    assert again.data == first.data and again.headers[REPLAYED_HEADER] == "true"


def _claim_in_flight(flask_app, key: str, body: dict) -> IdempotencyClaim:
    """Accept ``body`` with ``key`` the way a first request does, then stop before saving
    its response (as if its API process died or were still counting)."""
    from gateway.api.channels import _parse_publish

    c = flask_app.extensions["clarion"]
    app = c.settings.app_by_id("1")
    publish = _parse_publish(app, body, batch=False)
    claim = idempotency.claim(c.idempotency, "1", key, 300, "events", [publish], None)
    events = [(ch, publish.event, publish.data, publish.exclude) for ch in publish.channels]
    assert c.history.accept("1", events, None, claim)  # accepted, response unknown
    return claim


def test_repeat_waits_for_the_first_response(flask_app, client, redis_client, keys):
    body = _event("wait", info="subscription_count")
    claim = _claim_in_flight(flask_app, "slow", body)
    saved = b'{"channels":{"wait":{"subscription_count":7}}}'
    timer = threading.Timer(0.2, lambda: redis_client.hset(claim.key, "r", saved))
    timer.start()
    began = time.monotonic()
    again = _post(client, body, key="slow")
    assert 0.15 < time.monotonic() - began < idempotency.IN_FLIGHT_SECONDS
    assert again.data == saved and again.headers[REPLAYED_HEADER] == "true"
    assert _logged(redis_client, keys, "wait") == 1


def test_repeat_answers_for_a_first_request_that_died(flask_app, client, redis_client, keys,
                                                     monkeypatch):
    monkeypatch.setattr(idempotency, "IN_FLIGHT_SECONDS", 0.2)
    body = _event("died", info="subscription_count")
    _claim_in_flight(flask_app, "dead", body)
    again = _post(client, body, key="dead")
    assert again.status_code == 200 and again.headers[REPLAYED_HEADER] == "true"
    assert again.get_json() == {"channels": {"died": {"subscription_count": 0}}}
    # Its answer is now the key's: every later repeat gets the same bytes.
    assert _post(client, body, key="dead").data == again.data
    assert _logged(redis_client, keys, "died") == 1


def test_replays_are_counted(client):
    _post(client, _event("cnt"), key="cnt")
    _post(client, _event("cnt"), key="cnt")
    _post(client, _event("cnt", "other"), key="cnt")
    text = client.get("/metrics").data.decode()
    assert 'clarion_api_idempotent_repeats_total{app_id="1",outcome="replayed"} 1.0' in text
    assert 'clarion_api_idempotent_repeats_total{app_id="1",outcome="conflict"} 1.0' in text


def test_record_holds_fingerprint_and_response_only(client, redis_client, keys):
    _post(client, _event("rec"), key="rec")
    record = redis_client.hgetall(keys.idempotency("1", "rec"))
    assert set(record) == {b"f", b"r"} and record[b"r"] == b"{}"
    assert json.loads(record[b"r"]) == {}
