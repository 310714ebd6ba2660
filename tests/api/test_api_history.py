"""The History API, GET /apps/{id}/channels/{channel}/events: paging, completeness (the
chain), parameters, auth. The official SDK calls it through its signed generic request."""

from __future__ import annotations

import time
import uuid

import pusher
import pusher.errors
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.api.history import MAX_SERIAL
from gateway.protocol.signatures import sign_rest_request
from tests.api.api_harness import APP, DISABLED, SMALL, sdk_history, signed

_FN_SCOPED = [HealthCheck.function_scoped_fixture]


def _publish(sdk: pusher.Pusher, channel: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count, 10):
        sdk.trigger_batch([{"channel": channel, "name": "n", "data": str(j)}
                           for j in range(i, min(i + 10, start + count))])


def _pages(sdk: pusher.Pusher, channel: str, **params: object) -> list[dict]:
    pages = [sdk_history(sdk, channel, **params)]
    while pages[-1]["has_more"]:
        pages.append(sdk_history(sdk, channel, **{**params, "after": pages[-1]["next"]}))
    return pages


def _get(client, path: str, params: dict[str, str], app: dict = APP):
    return signed(client, "GET", path, app, params=params)


# --------------------------------------------------------------------------- paging


def test_sdk_pages_through_a_channel_oldest_first(sdk):
    _publish(sdk, "paged", 250)
    pages = _pages(sdk, "paged")
    assert [len(p["events"]) for p in pages] == [100, 100, 50]  # the default limit
    events = [e for p in pages for e in p["events"]]
    assert [e["data"] for e in events] == [str(i) for i in range(250)]
    assert all(set(e) == {"serial", "event", "data"} for e in events)
    serials = [e["serial"] for e in events]
    assert serials == sorted(set(serials))
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert all(p["complete"] and "reason" not in p for p in pages)
    assert all(p["serial"] == serials[-1] for p in pages)  # the channel's current position
    assert [p["next"] for p in pages] == [serials[99], serials[199], serials[-1]]


def test_after_returns_only_newer_events_and_next_polls(sdk):
    _publish(sdk, "poll", 5)
    first = sdk_history(sdk, "poll", limit=2)
    assert [e["data"] for e in first["events"]] == ["0", "1"] and first["has_more"]
    rest = sdk_history(sdk, "poll", after=first["next"])
    assert [e["data"] for e in rest["events"]] == ["2", "3", "4"] and not rest["has_more"]
    # Nothing new: an empty, complete page that stays where it was.
    idle = sdk_history(sdk, "poll", after=rest["next"])
    assert idle["events"] == [] and idle["complete"] and idle["next"] == rest["next"]
    _publish(sdk, "poll", 1, start=5)
    assert [e["data"] for e in sdk_history(sdk, "poll", after=idle["next"])["events"]] == ["5"]


def test_limit_bounds(sdk):
    _publish(sdk, "big", 1005)
    assert len(sdk_history(sdk, "big", limit=1000)["events"]) == 1000
    assert len(sdk_history(sdk, "big", limit=1)["events"]) == 1
    with pytest.raises(pusher.errors.PusherBadRequest, match="limit must be an integer from 1 "
                                                             "to 1000"):
        sdk_history(sdk, "big", limit=1001)


def test_unknown_or_empty_channel_is_an_empty_page(sdk):
    page = sdk_history(sdk, f"never-{uuid.uuid4().hex[:8]}")
    assert page == {"events": [], "serial": 0, "next": 0, "has_more": False, "complete": True}


def test_socket_id_exclusion_is_not_exposed(client, sdk):
    sdk.trigger("excl", "e", "d", socket_id="123.456")
    [event] = sdk_history(sdk, "excl")["events"]
    assert "123.456" not in str(event) and set(event) == {"serial", "event", "data"}


@given(count=st.integers(0, 30), limit=st.integers(1, 12), start=st.integers(0, 30))
@hsettings(max_examples=25, deadline=None, suppress_health_check=_FN_SCOPED)
def test_paging_from_any_event_returns_exactly_the_rest(sdk, count, limit, start):
    """Whatever the page size and wherever a reader stands, following ``next`` while
    ``has_more`` gives every later event once, in order, each page complete."""
    channel = f"prop-{uuid.uuid4().hex[:8]}"
    _publish(sdk, channel, count)
    everything = [e for p in _pages(sdk, channel, limit=1000) for e in p["events"]]
    start = min(start, count)
    after = everything[start - 1]["serial"] if start else 0
    pages = _pages(sdk, channel, limit=limit, after=after)
    got = [e for p in pages for e in p["events"]]
    assert got == everything[start:]
    assert all(len(p["events"]) <= limit for p in pages)
    assert all(p["complete"] for p in pages)
    assert pages[-1]["next"] == (everything[-1]["serial"] if everything else 0)


# --------------------------------------------------------------------------- completeness


def test_trimmed_events_make_the_page_incomplete(server, redis_client, keys):
    """App 3 keeps 3 events per channel: a reader behind them learns that it missed some
    (reason "expired") and gets what the log still has."""
    small = pusher.Pusher(app_id=SMALL["id"], key=SMALL["key"], secret=SMALL["secret"],
                          host="127.0.0.1", port=server, ssl=False)
    _publish(small, "trim", 2)
    s0, s1 = [e["serial"] for e in sdk_history(small, "trim")["events"]]
    _publish(small, "trim", 3, start=2)
    whole = sdk_history(small, "trim")
    assert [e["data"] for e in whole["events"]] == ["2", "3", "4"]  # "0" and "1" trimmed
    assert (whole["complete"], whole["reason"]) == (False, "expired")
    # A reader who has "1" missed nothing, although "1" is gone; one who has "0" missed "1".
    complete = {k: v for k, v in whole.items() if k != "reason"} | {"complete": True}
    assert sdk_history(small, "trim", after=s1) == complete
    behind = sdk_history(small, "trim", after=s0)
    assert behind == whole
    # The whole log expired (retention): an empty page, still incomplete for both.
    redis_client.delete(keys.history("3", "trim"))
    empty = sdk_history(small, "trim", after=s1)
    assert (empty["events"], empty["complete"], empty["reason"]) == ([], False, "expired")
    assert empty["next"] == whole["serial"]  # a reader goes on from the channel's position
    assert sdk_history(small, "trim", after=whole["serial"])["complete"]


def test_lost_log_reads_as_reset(sdk, redis_client, keys):
    _publish(sdk, "lost", 2)
    old = sdk_history(sdk, "lost")["serial"]
    # Redis lost the channel's data (flushed, replaced, rolled back): the chain starts over.
    redis_client.delete(keys.serial("1", "lost"), keys.history("1", "lost"))
    empty = sdk_history(sdk, "lost", after=old)
    assert (empty["events"], empty["complete"], empty["reason"]) == ([], False, "reset")
    assert empty["next"] == 0
    _publish(sdk, "lost", 1, start=9)
    page = sdk_history(sdk, "lost", after=old)
    assert [e["data"] for e in page["events"]] == ["9"]
    assert (page["complete"], page["reason"]) == (False, "reset")


def test_a_reader_ahead_of_the_channel_is_told_reset(sdk):
    _publish(sdk, "ahead", 1)
    serial = sdk_history(sdk, "ahead")["serial"]
    page = sdk_history(sdk, "ahead", after=serial + 10)
    assert (page["complete"], page["reason"], page["next"]) == (False, "reset", serial)


# --------------------------------------------------------------------------- parameters, auth


@pytest.mark.parametrize(("name", "value"), [
    ("after", "-1"), ("after", "abc"), ("after", " 5"), ("after", "+5"), ("after", "1.5"),
    ("after", str(MAX_SERIAL + 1)), ("after", ""), ("after", "١٢"), ("limit", "0"),
    ("limit", "1001"), ("limit", "ten"), ("limit", "1e3"),
])
def test_bad_parameters_are_400_json_naming_them(client, name, value):
    r = _get(client, "/apps/1/channels/c/events", {name: value})
    assert r.status_code == 400
    body = r.get_json()
    assert body["code"] == 400 and body["error"].startswith(f"{name} must be an integer")


@given(after=st.text(max_size=25), limit=st.text(max_size=6))
@hsettings(max_examples=60, deadline=None, suppress_health_check=_FN_SCOPED)
def test_any_parameter_text_is_200_or_a_400_saying_why(client, after, limit):
    r = _get(client, "/apps/1/channels/c/events", {"after": after, "limit": limit})
    valid = (after.isascii() and after.isdigit() and int(after) <= MAX_SERIAL
             and limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 1000)
    assert r.status_code == (200 if valid else 400), r.get_json()
    if not valid:
        assert "must be an integer" in r.get_json()["error"]


def test_bad_channel_name_400(client):
    r = _get(client, "/apps/1/channels/" + "x" * 201 + "/events", {})
    assert r.status_code == 400 and r.get_json()["code"] == 400


def test_auth_failures(client, server):
    forger = pusher.Pusher(app_id="1", key=APP["key"], secret="wrong", host="127.0.0.1",
                           port=server, ssl=False)
    with pytest.raises(pusher.errors.PusherBadAuth, match="signature"):
        sdk_history(forger, "c")
    unsigned = client.get("/apps/1/channels/c/events")
    assert unsigned.status_code == 401 and unsigned.get_json()["code"] == 401
    # The parameters are signed: changing one after signing is refused.
    r = signed(client, "GET", "/apps/1/channels/c/events", APP, params={"after": "1"})
    assert r.status_code == 200
    q = sign_rest_request(APP["key"], APP["secret"], "GET", "/apps/1/channels/c/events",
                          {"after": "1"}, b"", int(time.time()))
    r = client.get("/apps/1/channels/c/events", query_string={**q, "after": "0"})
    assert r.status_code == 401 and "signature" in r.get_json()["error"].lower()
    # Another app's credentials do not read app 1's channels.
    r = signed(client, "GET", "/apps/1/channels/c/events", SMALL)
    assert r.status_code == 401


def test_unknown_app_404_disabled_app_403(client):
    r = signed(client, "GET", "/apps/99/channels/c/events", APP)
    assert r.status_code == 404 and r.get_json() == {
        "error": "The app 99 could not be found.", "code": 404}
    r = signed(client, "GET", "/apps/2/channels/c/events", DISABLED)
    assert r.status_code == 403 and r.get_json()["code"] == 403


def test_apps_do_not_share_channels(sdk, client):
    _publish(sdk, "mine", 1)
    r = signed(client, "GET", "/apps/3/channels/mine/events", SMALL)
    assert r.status_code == 200 and r.get_json()["events"] == []
