"""Webhooks from the real WebSocket nodes, through real workers, to a receiver on loopback."""

from __future__ import annotations

import json
import time

import pytest

from tests.webhooks.harness import ALL_EVENTS, Receiver

WEBHOOKS = {"debounce": 0.5, "batch_window": 0.05, "tick": 0.05, "retry_schedule": [0.3, 0.3],
            "jitter": 0.0, "allowed_networks": ["127.0.0.0/8"]}
EVENTS = [e for e in ALL_EVENTS if e != "subscription_count"]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def cluster(cluster_factory, receiver):
    return cluster_factory(
        nodes=2, workers=1, webhooks=WEBHOOKS,
        app={"webhooks": [{"url": receiver.url(), "events": EVENTS}]},
    )


def validated_events(cluster, receiver) -> list[dict]:
    """Every delivered body, checked with the official SDK's validator, in arrival order."""
    client = cluster.pusher()
    events = []
    for r in receiver.delivered():
        assert r.headers["content-type"] == "application/json"
        body = client.validate_webhook(
            r.headers["x-pusher-key"], r.headers["x-pusher-signature"], r.body.decode())
        assert body is not None, "the pusher SDK refused the webhook signature"
        events += body["events"]
    return events


def names_on(events: list[dict], channel: str) -> list[str]:
    return [e["name"] for e in events if e.get("channel") == channel]


def wait_names(cluster, receiver, channel: str, expected: list[str], timeout: float = 15.0,
               unordered_tail: int = 0):
    """Wait until the channel's webhooks are ``expected``; the last ``unordered_tail`` ones
    may come in any order (transitions that fall due together, such as the debounced
    member_removed and channel_vacated)."""
    cut = len(expected) - unordered_tail

    def matches(got: list[str]) -> bool:
        return got[:cut] == expected[:cut] and sorted(got[cut:]) == sorted(expected[cut:])

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if matches(names_on(validated_events(cluster, receiver), channel)):
            return
        time.sleep(0.1)
    got = names_on(validated_events(cluster, receiver), channel)
    assert matches(got), f"{got} != {expected}"


def test_presence_lifecycle_across_two_nodes(cluster, receiver):
    channel = "presence-room"
    tab1, tab2 = cluster.client(0), cluster.client(1)
    tab1.subscribe(channel, user_id="u1", user_info={"name": "Ada"})
    tab2.subscribe(channel, user_id="u1", user_info={"name": "Ada"})  # same user, other node
    wait_names(cluster, receiver, channel, ["channel_occupied", "member_added"])

    tab2.send_event("client-typing", {"on": True}, channel=channel)
    wait_names(cluster, receiver, channel,
               ["channel_occupied", "member_added", "client_event"])
    client_event = [e for e in validated_events(cluster, receiver)
                    if e["name"] == "client_event"][0]
    assert client_event["user_id"] == "u1" and client_event["event"] == "client-typing"
    assert json.loads(client_event["data"]) == {"on": True}

    tab1.close()  # the user still has a tab on the other node: no member_removed
    time.sleep(1.5)
    assert names_on(validated_events(cluster, receiver), channel) == [
        "channel_occupied", "member_added", "client_event"]
    tab2.close()
    wait_names(cluster, receiver, channel, [
        "channel_occupied", "member_added", "client_event", "member_removed",
        "channel_vacated"], unordered_tail=2)


def test_reload_inside_the_debounce_sends_nothing(cluster, receiver):
    channel = "reloaded"
    page = cluster.client(0)
    page.subscribe(channel)
    wait_names(cluster, receiver, channel, ["channel_occupied"])
    page.close()
    page = cluster.client(1)  # the reload lands on the other node
    page.subscribe(channel)
    time.sleep(1.5)
    assert names_on(validated_events(cluster, receiver), channel) == ["channel_occupied"]
    page.close()
    wait_names(cluster, receiver, channel, ["channel_occupied", "channel_vacated"])


def test_cache_miss_webhook(cluster, receiver):
    client = cluster.client(0)
    client.subscribe("cache-quotes")
    client.wait_for(lambda f: f.get("event") == "pusher:cache_miss")
    wait_names(cluster, receiver, "cache-quotes", ["channel_occupied", "cache_miss"])
    client.close()


def test_webhooks_set_with_clarion_apps_on_a_running_cluster(cluster_factory, receiver):
    """`clarion apps set ID webhooks=[...]` and `rotate-secret` apply without a restart: the
    node reports for the new endpoint, the worker signs with the app's current secret."""
    import pusher
    from click.testing import CliRunner

    from config import settings_to_env
    from gateway.cli import main

    cluster = cluster_factory(nodes=1, workers=1, webhooks=WEBHOOKS)
    env = settings_to_env(cluster.settings)
    endpoint = json.dumps([{"url": receiver.url("/set"), "events": ["channel_occupied"]}])
    for args in (["set", "1", f"webhooks={endpoint}"],
                 ["rotate-secret", "1", "--secret", "rotated-secret"]):
        result = CliRunner().invoke(main, ["apps", *args], env=env)
        assert result.exit_code == 0, result.output
    time.sleep(1.2)  # workers re-read the store at most every second
    client = cluster.client(0)
    client.subscribe("hooked")
    assert receiver.wait_for(lambda r: len(r.delivered()) == 1, 15)
    req = receiver.delivered()[0]
    sdk = pusher.Pusher(app_id="1", key=cluster.settings.apps[0].key, secret="rotated-secret")
    body = sdk.validate_webhook(req.headers["x-pusher-key"], req.headers["x-pusher-signature"],
                                req.body.decode())
    assert [(e["name"], e["channel"]) for e in body["events"]] == [("channel_occupied", "hooked")]
    client.close()
