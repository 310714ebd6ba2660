"""What a resuming client is told when it cannot get every missed event back, (c) and (d);
(e) a presence channel resuming; (f) pusher-js and Echo without the extension unchanged."""

from __future__ import annotations

import time

import pytest
import redis

from gateway.state.keys import Keys
from tests.continuity.continuity_harness import Publisher, fleet_problems

pytestmark = pytest.mark.slow


def away_while(proxy, fleet, action) -> None:
    """Cut the fleet's connections, run ``action`` while they are away, let them back, and
    wait until every client has subscribed again."""
    proxy.cut()
    time.sleep(0.3)  # the node has seen them go
    action()
    proxy.allow()
    fleet.wait_subscribed(2)


def positions(fleet, channel: str) -> list[int]:
    return [client["serials"][channel] for client in fleet.report()]


def test_a_gap_beyond_the_log_is_reported_as_expired(cluster_factory, proxy_factory,
                                                     fleet_factory):
    cluster = cluster_factory(nodes=1, workers=1, history={"max_events": 20})
    channel = "resume-expired"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, 2, flavor="mixed")
    fleet.subscribe([channel])
    publisher = Publisher(cluster, [channel], rate=500)
    publisher.publish(10)
    fleet.wait_received(10)
    before = positions(fleet, channel)

    away_while(proxy, fleet, lambda: publisher.publish(100))  # 10..109; the log keeps 20
    publisher.publish(10)  # 110..119, live
    fleet.wait_received(20)
    time.sleep(0.5)

    for client, serial in zip(fleet.report(), before, strict=True):
        assert client["failed"][channel] == [{"reason": "expired", "serial": serial}]
        # Not a hole: none of the missed events, even those the log still had.
        assert client["received"][channel] == [*range(10), *range(110, 120)]
        assert client["serials"][channel] > serial


def test_a_lost_log_is_reported_as_reset(cluster, redis_server, proxy_factory, fleet_factory):
    channel = "resume-reset"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, 2, flavor="mixed")
    fleet.subscribe([channel])
    publisher = Publisher(cluster, [channel], rate=500)
    publisher.publish(10)
    fleet.wait_received(10)
    before = positions(fleet, channel)

    def lose_the_log() -> None:
        # What a Redis that lost its data looks like to this channel: no serial counter, no
        # log; then events go on (10..14) in a log that starts afresh.
        keys = Keys(cluster.settings.redis.key_prefix)
        with redis.Redis.from_url(redis_server.url) as r:
            assert r.delete(keys.serial("1", channel), keys.history("1", channel)) == 2
        publisher.publish(5)

    away_while(proxy, fleet, lose_the_log)
    publisher.publish(5)  # 15..19, live
    fleet.wait_received(15)
    time.sleep(0.5)

    for client, serial in zip(fleet.report(), before, strict=True):
        assert client["failed"][channel] == [{"reason": "reset", "serial": serial}]
        assert client["received"][channel] == [*range(10), *range(15, 20)]


def test_a_presence_channel_resumes_with_the_members_of_now(cluster, proxy_factory,
                                                            fleet_factory):
    channel = "presence-resume-room"
    proxy = proxy_factory([cluster.node_ports[0]])
    # alice (pusher-js) and dave (Echo) resume through the proxy; bob and carol connect
    # directly, bob leaving and carol joining while alice and dave are away.
    away = fleet_factory(proxy.port, 2, flavor="mixed", users=["alice", "dave"])
    bob = fleet_factory(cluster.node_ports[0], 1, users=["bob"])
    bob.subscribe([channel])
    away.subscribe([channel])
    for client in away.report():
        assert {"bob", client["user"]} <= set(client["joined"][channel])
    publisher = Publisher(cluster, [channel], rate=500)
    publisher.publish(5)
    away.wait_received(5)

    def change_the_room() -> None:
        bob.close()
        carol = fleet_factory(cluster.node_ports[0], 1, users=["carol"])
        carol.subscribe([channel])
        publisher.publish(5)

    away_while(proxy, away, change_the_room)
    publisher.publish(5)
    away.wait_received(15)
    time.sleep(0.5)

    clients = away.report()
    assert fleet_problems(clients, publisher.accepted) == []
    for client in clients:
        # The member list of the resumed subscription is the room's as it is now (the other
        # resuming client may join it just after): bob gone, carol there.
        joined = set(client["joined"][channel])
        assert {client["user"], "carol"} <= joined <= {"alice", "carol", "dave"}, joined
        assert client["members"][channel] == ["alice", "carol", "dave"]
        assert client["failed"][channel] == []


def test_pusher_js_without_the_extension_is_unchanged(cluster, fleet_factory):
    channels = ["plain-news", "private-plain-orders", "presence-plain-room"]
    plain = fleet_factory(cluster.node_ports[0], 4, resume=False, flavor="mixed")
    resuming = fleet_factory(cluster.node_ports[0], 2, resume=True, flavor="mixed")
    for fleet in (plain, resuming):
        fleet.subscribe(channels)
    publisher = Publisher(cluster, channels, rate=300)
    publisher.publish(60)
    for fleet in (plain, resuming):
        fleet.wait_received(60)
    time.sleep(0.5)

    for fleet in (plain, resuming):
        assert fleet_problems(fleet.report(), publisher.accepted) == []
    for client in plain.report():
        # The frames on the wire are Pusher protocol 7 frames, as before: no serial at all.
        assert client["raw_frames"] >= 60 and client["raw_with_serial"] == 0, client
        assert client["failed"] == dict.fromkeys(channels, [])
    for client in resuming.report():
        # The same channels at the same time: a subscription that asked has them.
        assert client["raw_with_serial"] >= 60 + len(channels), client


def test_events_excluding_the_previous_connection_are_not_replayed_to_it(
        cluster, proxy_factory, fleet_factory):
    # The app published them with socket_id = the client's connection of then (the client
    # caused them and has applied them already): the resumed subscription names that
    # connection, so they are left out of the replay, the others are not.
    channel = "resume-exclude"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, 2, flavor="mixed")
    fleet.subscribe([channel])
    sdk = cluster.pusher()
    sdk.trigger(channel, "seq", {"n": 0})
    fleet.wait_received(1)
    before = [client["socket_ids"][-1] for client in fleet.report()]

    def publish_some_excluding() -> None:
        sdk.trigger(channel, "seq", {"n": 1})
        for i, socket_id in enumerate(before):  # 2 excludes client 0, 3 excludes client 1
            sdk.trigger(channel, "seq", {"n": 2 + i}, socket_id=socket_id)
        sdk.trigger(channel, "seq", {"n": 4})

    away_while(proxy, fleet, publish_some_excluding)
    sdk.trigger(channel, "seq", {"n": 5})
    fleet.wait_received(5)
    time.sleep(0.5)
    got = [client["received"][channel] for client in fleet.report()]
    assert got == [[0, 1, 3, 4, 5], [0, 1, 2, 4, 5]]


# Several subscribers resuming on a channel new to the node at the same moment: the ones
# that arrive while the first reads the channel's position wait for it (gateway/ws/hub.py);
# before, they took the new channel's initial 0 for it and silently lost the events.
def test_a_channel_whose_first_events_come_while_away(cluster, proxy_factory, fleet_factory):
    # Nothing was ever published on the channel when the clients subscribed: the position
    # they are given then (0) is all they have to resume from. Ten clients, reconnecting at
    # the same moment, so that several subscribe while the node is still reading the
    # channel's position for the first of them.
    channel = "resume-quiet"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, 10, flavor="mixed")
    fleet.subscribe([channel])
    assert all(isinstance(s, int) for s in positions(fleet, channel)), positions(fleet, channel)
    publisher = Publisher(cluster, [channel], rate=500)

    away_while(proxy, fleet, lambda: publisher.publish(5))
    publisher.publish(5)
    fleet.wait_received(5)
    time.sleep(1.0)
    clients = fleet.report()
    assert fleet_problems(clients, publisher.accepted) == []
    assert all(client["failed"][channel] == [] for client in clients)
