"""POST /apps/{id}/events and /batch_events: validation, serials, one task per request."""

from __future__ import annotations

import json

import pusher.errors
import pytest

from gateway.state.history import parse_member
from tests.api.api_harness import APP, clear_live, queued_tasks, sdk_raw, signed

DELIVER = "clarion.live.deliver"


def test_sdk_trigger_one_channel(sdk, redis_client, key_prefix, keys):
    assert sdk.trigger("my-channel", "my-event", {"message": "hello"}) == {}

    [(task, (app_id, events))] = queued_tasks(redis_client, key_prefix)
    assert task == DELIVER and app_id == "1"
    [[channel, event, data, exclude, serial, prev]] = events
    assert (channel, event, exclude, prev) == ("my-channel", "my-event", None, 0)
    assert json.loads(data) == {"message": "hello"}
    # The serial is the channel's, and the event is in the channel's log under it.
    assert int(redis_client.get(keys.serial("1", "my-channel"))) == serial
    [logged] = [
        parse_member(m) for m in redis_client.zrange(keys.history("1", "my-channel"), 0, -1)
    ]
    assert (logged.serial, logged.prev, logged.event, logged.data, logged.exclude) == (
        serial, 0, "my-event", data, None)


def test_serials_are_chained_per_channel(sdk, redis_client, key_prefix):
    for i in range(3):
        sdk.trigger(["a", "b"], "ev", str(i))
    tasks = queued_tasks(redis_client, key_prefix)
    assert len(tasks) == 3
    by_channel: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    for _, (_, events) in tasks:
        for channel, _e, _d, _x, serial, prev in events:
            by_channel[channel].append((serial, prev))
    for links in by_channel.values():
        serials = [s for s, _ in links]
        assert serials == sorted(set(serials))
        assert [p for _, p in links] == [0, *serials[:-1]]


def test_sdk_trigger_hundred_channels_one_task(sdk, redis_client, key_prefix):
    channels = [f"ch-{i}" for i in range(100)]
    assert sdk.trigger(channels, "ev", "x") == {}
    [(_, (_, events))] = queued_tasks(redis_client, key_prefix)
    assert [e[0] for e in events] == channels


def test_hundred_and_one_channels_refused(sdk, redis_client, key_prefix):
    body = {"name": "ev", "data": "x", "channels": [f"ch-{i}" for i in range(101)]}
    with pytest.raises(pusher.errors.PusherBadRequest, match="Too many channels"):
        sdk_raw(sdk, "POST", "/apps/1/events", body)
    assert queued_tasks(redis_client, key_prefix) == []


def test_single_channel_field(client, redis_client, key_prefix):
    r = signed(client, "POST", "/apps/1/events", APP, {"name": "e", "channel": "c", "data": "d"})
    assert r.status_code == 200 and r.get_json() == {}
    [(_, (_, [[channel, *_]]))] = queued_tasks(redis_client, key_prefix)
    assert channel == "c"


def test_server_to_user_channel_allowed(client, redis_client, key_prefix):
    body = {"name": "e", "channels": ["#server-to-user-42"], "data": "d"}
    assert signed(client, "POST", "/apps/1/events", APP, body).status_code == 200


def test_sdk_batch_of_ten(sdk, redis_client, key_prefix):
    batch = [{"channel": f"c{i}", "name": "ev", "data": {"i": i}} for i in range(10)]
    assert sdk.trigger_batch(batch) == {}
    [(_, (_, events))] = queued_tasks(redis_client, key_prefix)
    assert [(e[0], json.loads(e[2])) for e in events] == [(f"c{i}", {"i": i}) for i in range(10)]


def test_sdk_batch_of_eleven_refused(sdk, redis_client, key_prefix):
    batch = [{"channel": f"c{i}", "name": "ev", "data": "x"} for i in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest, match="more than 10 messages"):
        sdk.trigger_batch(batch)
    assert queued_tasks(redis_client, key_prefix) == []


def test_batch_item_errors_name_the_item(client, redis_client, key_prefix):
    batch = [{"channel": "ok", "name": "e", "data": "x"}, {"channel": "bad channel", "name": "e",
                                                           "data": "x"}]
    r = signed(client, "POST", "/apps/1/batch_events", APP, {"batch": batch})
    assert r.status_code == 400 and r.get_json()["error"].startswith("batch[1]:")
    assert queued_tasks(redis_client, key_prefix) == []


def test_socket_id_exclusion(sdk, redis_client, key_prefix):
    sdk.trigger("c", "e", "d", socket_id="123.456")
    [(_, (_, [[_, _, _, exclude, _, _]]))] = queued_tasks(redis_client, key_prefix)
    assert exclude == "123.456"


@pytest.mark.parametrize("socket_id", ["abc", "123", "1.2.3", "12.x", 123.456, ""])
def test_bad_socket_id_refused(client, socket_id):
    body = {"name": "e", "channel": "c", "data": "d", "socket_id": socket_id}
    r = signed(client, "POST", "/apps/1/events", APP, body)
    assert r.status_code == 400 and "socket_id" in r.get_json()["error"]


def test_oversized_data_413(sdk, redis_client, key_prefix):
    # 10 241 bytes: above the app's 10 KB limit, below the SDK's own 30 KB client-side check.
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        sdk.trigger("c", "e", "x" * 10_241)
    # The limit is in UTF-8 bytes, not characters.
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        sdk.trigger("c", "e", "é" * 5_121)
    assert sdk.trigger("c", "e", "x" * 10_240) == {}
    assert len(queued_tasks(redis_client, key_prefix)) == 1


def test_oversized_batch_item_413(client):
    batch = [{"channel": "c", "name": "e", "data": "x" * 10_241}]
    assert signed(client, "POST", "/apps/1/batch_events", APP, {"batch": batch}).status_code == 413


def test_overlong_channel_and_event_names(client, redis_client, key_prefix):
    long_channel = {"name": "e", "channels": ["c" * 201], "data": "d"}
    r = signed(client, "POST", "/apps/1/events", APP, long_channel)
    assert r.status_code == 400 and "longer than" in r.get_json()["error"]
    assert signed(client, "POST", "/apps/1/events", APP,
                  {"name": "e", "channels": ["c" * 200], "data": "d"}).status_code == 200
    long_event = {"name": "e" * 201, "channels": ["c"], "data": "d"}
    r = signed(client, "POST", "/apps/1/events", APP, long_event)
    assert r.status_code == 400 and "event name" in r.get_json()["error"]
    assert len(queued_tasks(redis_client, key_prefix)) == 1


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"name": "e", "data": "d"}, "Missing channels"),
        ({"name": "e", "channels": [], "data": "d"}, "At least one channel"),
        ({"name": "e", "channels": "c", "data": "d"}, "list"),
        ({"name": "e", "channels": ["c"]}, "data must be a string"),
        ({"name": "e", "channels": ["c"], "data": {"a": 1}}, "data must be a string"),
        ({"channels": ["c"], "data": "d"}, "event name"),
        ({"name": "pusher:x", "channels": ["c"], "data": "d"}, "prefix"),
        ({"name": "e", "channels": ["a b"], "data": "d"}, "not allowed"),
        ({"name": "e", "channels": [5], "data": "d"}, "non-empty string"),
        ({"name": "e", "channels": ["c"], "data": "d", "info": "bogus"}, "bogus"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_events_400(client, body, fragment):
    r = signed(client, "POST", "/apps/1/events", APP, body)
    assert r.status_code == 400, r.get_json()
    assert fragment in r.get_json()["error"]
    assert r.get_json()["code"] == 400


def test_malformed_json_400(client):
    r = signed(client, "POST", "/apps/1/events", APP, raw=b"{not json")
    assert r.status_code == 400 and r.get_json()["code"] == 400
    assert r.get_json()["error"].startswith("The request body is not valid JSON: ")


def test_laravel_style_event_names_and_unicode_data_round_trip(client, redis_client, key_prefix):
    data = json.dumps({"text": "héllo 👋", "n": 1}, ensure_ascii=False)
    body = {"name": "App\\Events\\OrderShipped", "channels": ["private-orders.1"], "data": data}
    assert signed(client, "POST", "/apps/1/events", APP, body).status_code == 200
    [(_, (_, [[_, event, got, _, _, _]]))] = queued_tasks(redis_client, key_prefix)
    assert event == "App\\Events\\OrderShipped" and got == data


def test_info_on_trigger(sdk, node, redis_client, key_prefix):
    node.subscribe("1", "public-a", 3)
    node.subscribe("1", "presence-room", 2)
    node.join("1", "presence-room", "1.1", "u1")
    node.join("1", "presence-room", "1.2", "u2")
    body = {
        "name": "e", "data": "d", "channels": ["public-a", "presence-room", "empty"],
        "info": "user_count,subscription_count",
    }
    assert sdk_raw(sdk, "POST", "/apps/1/events", body) == {
        "channels": {
            "public-a": {"subscription_count": 3},
            "presence-room": {"user_count": 2},
            "empty": {"subscription_count": 0},
        }
    }


def test_info_on_batch(client, node):
    node.subscribe("1", "a", 1)
    batch = [
        {"channel": "a", "name": "e", "data": "d", "info": "subscription_count"},
        {"channel": "b", "name": "e", "data": "d"},
    ]
    r = signed(client, "POST", "/apps/1/batch_events", APP, {"batch": batch})
    assert r.get_json() == {"batch": [{"subscription_count": 1}, {}]}


def test_dead_node_not_counted(client, node, redis_client, keys):
    node.subscribe("1", "a", 5)
    redis_client.zadd(keys.nodes, {node.node_id: 1000})  # heartbeat from 1970
    body = {"name": "e", "channels": ["a"], "data": "d", "info": "subscription_count"}
    r = signed(client, "POST", "/apps/1/events", APP, body)
    assert r.get_json() == {"channels": {"a": {"subscription_count": 0}}}


def test_enqueued_message_matches_celery_send_task(client, redis_client, key_prefix, settings):
    """The message the accept script enqueues (gateway/api/deliver_message.py) is the one
    ``Celery.send_task`` writes, but for ids, origin, argsrepr and the body's encoding, and
    kombu decodes both to the same task and arguments."""
    import json as _json

    from kombu.transport.virtual.base import Base64, Channel
    from kombu.transport.virtual.base import Message as KombuMessage

    from workers.celery_app import create_celery

    clear_live(redis_client, key_prefix)
    r = signed(client, "POST", "/apps/1/events", APP,
               {"name": "ev", "channels": ["a", "b"], "data": 'x "q" \\ é \u2028',
                "socket_id": "1.2"})
    assert r.status_code == 200
    [ours] = redis_client.lrange(f"{key_prefix}live", 0, -1)
    [(_, (app_id, events))] = queued_tasks(redis_client, key_prefix)
    celery = create_celery(settings)
    try:
        celery.send_task(DELIVER, args=(app_id, events), queue="live")
    finally:
        celery.close()
    theirs = redis_client.lpop(f"{key_prefix}live")
    assert theirs != ours
    a, b = _json.loads(ours), _json.loads(theirs)
    assert set(a) == set(b) and set(a["headers"]) == set(b["headers"])
    assert set(a["properties"]) <= set(b["properties"])
    varying = {"id", "root_id", "origin", "argsrepr"}
    assert {k: v for k, v in a["headers"].items() if k not in varying} == {
        k: v for k, v in b["headers"].items() if k not in varying}
    assert a["properties"]["delivery_info"] == b["properties"]["delivery_info"]
    assert a["properties"]["body_encoding"] == "utf-8"

    class _Channel:  # what kombu's Message needs of a channel to decode a payload
        codecs = {"base64": Base64()}

        def decode_body(self, body, encoding=None):
            return Channel.decode_body(self, body, encoding)

    decoded = [KombuMessage(p, channel=_Channel()).decode() for p in (a, b)]
    assert decoded[0] == decoded[1]
    assert decoded[0][0] == ["1", events] and events[0][2] == 'x "q" \\ é \u2028'
