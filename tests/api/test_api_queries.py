"""GET channels / channel / users, with state written the way nodes write it."""

from __future__ import annotations

import pusher.errors
import pytest

from tests.api.api_harness import APP, sdk_raw, signed


@pytest.fixture
def populated(node):
    node.subscribe("1", "public-a", 2)
    node.subscribe("1", "private-b", 1)
    node.subscribe("1", "presence-room", 3)
    for socket_id, user in [("1.1", "alice"), ("1.2", "bob"), ("1.3", "alice")]:
        node.join("1", "presence-room", socket_id, user, {"name": user})
    node.subscribe("2", "other-app", 1)
    return node


def test_channels_index(sdk, populated):
    assert sdk.channels_info() == {
        "channels": {"presence-room": {}, "private-b": {}, "public-a": {}}
    }


def test_channels_index_prefix_and_user_count(sdk, populated):
    assert sdk.channels_info(prefix_filter="presence-", attributes=["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }
    assert sdk.channels_info(prefix_filter="pri") == {"channels": {"private-b": {}}}


def test_channels_index_subscription_count(sdk, populated):
    got = sdk.channels_info(attributes=["subscription_count"])
    assert got == {
        "channels": {
            "presence-room": {},
            "private-b": {"subscription_count": 1},
            "public-a": {"subscription_count": 2},
        }
    }


def test_channels_index_user_count_needs_presence_prefix(sdk, populated):
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence-"):
        sdk.channels_info(attributes=["user_count"])
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence-"):
        sdk.channels_info(prefix_filter="private-", attributes=["user_count"])


def test_channels_index_sums_live_nodes(sdk, populated, redis_url, keys):
    from tests.api.api_harness import NodeState

    other = NodeState(redis_url, keys, "node-b")
    other.heartbeat()
    other.subscribe("1", "public-a", 5)
    other.subscribe("1", "only-on-b", 1)
    got = sdk.channels_info(attributes=["subscription_count"])["channels"]
    assert got["public-a"] == {"subscription_count": 7}
    assert got["only-on-b"] == {"subscription_count": 1}


def test_channel_show(sdk, populated):
    assert sdk.channel_info("public-a") == {"occupied": True}
    assert sdk.channel_info("public-a", ["subscription_count"]) == {
        "occupied": True, "subscription_count": 2,
    }
    assert sdk.channel_info("presence-room", ["user_count"]) == {
        "occupied": True, "user_count": 2,
    }
    assert sdk.channel_info("nobody-here", ["subscription_count"]) == {
        "occupied": False, "subscription_count": 0,
    }
    assert sdk.channel_info("presence-empty", ["user_count"]) == {
        "occupied": False, "user_count": 0,
    }


@pytest.mark.parametrize(
    "channel, attribute",
    [("public-a", "user_count"), ("presence-room", "subscription_count"), ("public-a", "nope")],
)
def test_channel_show_attribute_invalid_for_type(sdk, populated, channel, attribute):
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channel_info(channel, [attribute])


def test_channel_show_bad_name(client):
    r = signed(client, "GET", "/apps/1/channels/" + "c" * 201, APP)
    assert r.status_code == 400


def test_users(sdk, populated):
    assert sdk.users_info("presence-room") == {"users": [{"id": "alice"}, {"id": "bob"}]}
    assert sdk.users_info("presence-empty") == {"users": []}


def test_users_non_presence_400(sdk, populated):
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
        sdk.users_info("public-a")


def test_sdk_get_signed_with_body_md5(sdk, populated):
    # The Python SDK puts body_md5 (of the empty body) on GETs; the node.js SDK does not.
    from pusher.http import Request

    req = Request(sdk._pusher_client, "GET", "/apps/1/channels", {})
    assert req.query_params["body_md5"] == "d41d8cd98f00b204e9800998ecf8427e"
    assert sdk_raw(sdk, "GET", "/apps/1/channels", {})["channels"]


def test_get_without_body_md5(client, populated):
    r = signed(client, "GET", "/apps/1/channels", APP, params={"filter_by_prefix": "public-"})
    assert r.status_code == 200 and r.get_json() == {"channels": {"public-a": {}}}
