"""Request signing: what is accepted, what is refused with 401/403/404."""

from __future__ import annotations

import time

import orjson
import pusher
import pusher.errors
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.protocol.errors import AuthenticationFailed
from gateway.protocol.signatures import body_md5, sign_rest_request, verify_rest_request
from tests.api.api_harness import APP, DISABLED, clear_live, queued_tasks, signed

EVENT = {"name": "e", "channels": ["c"], "data": "d"}


def test_forged_signature_401(server, redis_client, key_prefix):
    forger = pusher.Pusher(app_id="1", key=APP["key"], secret="not-the-secret",
                           host="127.0.0.1", port=server, ssl=False)
    with pytest.raises(pusher.errors.PusherBadAuth, match="signature"):
        forger.trigger("c", "e", "d")
    assert queued_tasks(redis_client, key_prefix) == []


def test_wrong_key_401(server):
    other = pusher.Pusher(app_id="1", key="some-key", secret=APP["secret"],
                          host="127.0.0.1", port=server, ssl=False)
    with pytest.raises(pusher.errors.PusherBadAuth, match="auth_key"):
        other.channels_info()


def test_expired_timestamp_401(client):
    for skew in (-601, 601):
        r = signed(client, "POST", "/apps/1/events", APP, EVENT,
                   timestamp=int(time.time()) + skew)
        assert r.status_code == 401 and "Timestamp expired" in r.get_json()["error"]
    r = signed(client, "POST", "/apps/1/events", APP, EVENT, timestamp=int(time.time()) - 590)
    assert r.status_code == 200


def test_body_md5_mismatch_401(client):
    raw = orjson.dumps(EVENT)
    params = sign_rest_request(APP["key"], APP["secret"], "POST", "/apps/1/events", {},
                               raw, int(time.time()))
    tampered = raw.replace(b'"d"}', b'"D"}')
    r = client.post("/apps/1/events", query_string=params, data=tampered,
                    content_type="application/json")
    assert r.status_code == 401 and "body_md5" in r.get_json()["error"]


def test_body_changed_without_md5_401(client):
    # A signer that left out body_md5: the server still binds the body into the signature.
    params = {"auth_key": APP["key"], "auth_timestamp": str(int(time.time())),
              "auth_version": "1.0"}
    from gateway.protocol.signatures import rest_string_to_sign, sign

    params["auth_signature"] = sign(APP["secret"], rest_string_to_sign(
        "POST", "/apps/1/events", {**params, "body_md5": body_md5(b"{}")}))
    r = client.post("/apps/1/events", query_string=params, data=orjson.dumps(EVENT),
                    content_type="application/json")
    assert r.status_code == 401


def test_missing_auth_params_401(client):
    r = client.post("/apps/1/events", data=orjson.dumps(EVENT), content_type="application/json")
    assert r.status_code == 401 and r.get_json()["code"] == 401


def test_signed_for_another_path_401(client):
    params = sign_rest_request(APP["key"], APP["secret"], "GET", "/apps/1/channels/x", {},
                               b"", int(time.time()))
    assert client.get("/apps/1/channels", query_string=params).status_code == 401


def test_unknown_app_404(server):
    stranger = pusher.Pusher(app_id="99", key=APP["key"], secret=APP["secret"],
                             host="127.0.0.1", port=server, ssl=False)
    with pytest.raises(pusher.errors.PusherBadStatus, match="404") as info:
        stranger.trigger("c", "e", "d")
    assert "The app 99 could not be found." in str(info.value)


def test_disabled_app_403(server, client):
    off = pusher.Pusher(app_id="2", key=DISABLED["key"], secret=DISABLED["secret"],
                        host="127.0.0.1", port=server, ssl=False)
    with pytest.raises(pusher.errors.PusherForbidden):
        off.trigger("c", "e", "d")
    # ... but only once the request is authenticated.
    r = signed(client, "POST", "/apps/2/events", DISABLED, EVENT, secret="wrong")
    assert r.status_code == 401


# --------------------------------------------------------------------------- Hypothesis

_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda k: not k.startswith("auth_") and k not in ("body_md5", "info", "filter_by_prefix")
)
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=30,
)
_params = st.dictionaries(_keys, _values, max_size=5)


@given(method=st.sampled_from(["GET", "POST"]), params=_params, body=st.binary(max_size=200),
       skew=st.integers(-600, 600))
def test_sign_verify_round_trip(method, params, body, skew):
    now = 1_700_000_000
    signed_params = sign_rest_request("k", "s", method, "/apps/1/x", params, body, now + skew)
    verify_rest_request(key="k", secret="s", method=method, path="/apps/1/x",
                        params=signed_params, body=body, now=now, window=600)
    # Any change to a value, the body or the path is refused.
    if params:
        name = sorted(params)[0]
        changed = {**signed_params, name: params[name] + "!"}
        with pytest.raises(AuthenticationFailed):
            verify_rest_request(key="k", secret="s", method=method, path="/apps/1/x",
                                params=changed, body=body, now=now, window=600)
    with pytest.raises(AuthenticationFailed):
        verify_rest_request(key="k", secret="s", method=method, path="/apps/1/x",
                            params=signed_params, body=body + b"!", now=now, window=600)
    with pytest.raises(AuthenticationFailed):
        verify_rest_request(key="k", secret="s", method=method, path="/apps/1/y",
                            params=signed_params, body=body, now=now, window=600)


@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=_params, data=st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_through_http(client, redis_client, key_prefix, params, data):
    """Arbitrary (URL-encoded on the wire) query values and body text verify over HTTP, and
    the data reaches the task byte for byte."""
    clear_live(redis_client, key_prefix)
    body = {"name": "e", "channels": ["c"], "data": data}
    r = signed(client, "POST", "/apps/1/events", APP, body, params=params)
    assert r.status_code == 200, r.get_json()
    [(_, (_, [[_, _, got, _, _, _]]))] = queued_tasks(redis_client, key_prefix)
    assert got == data
    r = signed(client, "GET", "/apps/1/channels", APP, params=params)
    assert r.status_code == 200, r.get_json()
