"""Two WebSocket nodes, two worker processes, the API and Redis, all real processes: fan-out
across nodes, cluster-wide presence, ordering under concurrent publishing, a node that dies,
and bad input through the whole stack. Every test runs twice: on one Redis, and with the state
on a Redis Cluster of 3 masters (the broker on the single Redis)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pusher
import pytest
from _harness import Cluster, PusherClient, RejectedConnection
from _harness.client import data_of
from _harness.fixtures import STATE_REDIS, start_cluster, state_redis_sections, stop_cluster
from _harness.rest import signed_request

from gateway.processes import wait_http_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=STATE_REDIS)
def cluster(request, redis_server, tmp_path_factory):
    c = start_cluster(redis_server.url, tmp_path_factory.mktemp("e2e"), nodes=2, workers=2,
                      **state_redis_sections(request, redis_server.url))
    yield c
    stop_cluster(c)


@pytest.fixture
def sdk(cluster: Cluster) -> pusher.Pusher:
    return cluster.pusher()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def is_member_event(kind: str, channel: str):
    event = f"pusher_internal:member_{kind}"
    return lambda f: f.get("event") == event and f.get("channel") == channel


# --------------------------------------------------------------------------- fan-out


def test_events_reach_subscribers_on_both_nodes(cluster, sdk):
    channel = unique("both-nodes-")
    with cluster.client(0) as a, cluster.client(1) as b, cluster.client(1) as c:
        for client in (a, b, c):
            client.subscribe(channel)
        private = unique("private-both-")
        a.subscribe(private)
        b.subscribe(private)
        sdk.trigger(channel, "hello", {"from": "api"})
        sdk.trigger([private, channel], "again", "x")
        for client in (a, b, c):
            assert data_of(client.wait_for("hello", channel)) == {"from": "api"}
            assert client.wait_for("again", channel)["data"] == "x"
        for client in (a, b):
            client.wait_for("again", private)
        # Exclusion works whichever node the excluded socket is on.
        sdk.trigger(channel, "not-for-b", "1", socket_id=b.socket_id)
        sdk.trigger(channel, "sentinel", "2")
        for client in (a, c):
            client.wait_for("not-for-b", channel)
        b.wait_for("sentinel", channel)
        assert not [f for f in b.pending if f.get("event") == "not-for-b"]


def test_presence_is_one_list_across_nodes(cluster, sdk):
    channel = unique("presence-cluster-")
    alice = cluster.client(0)
    bob_tab1 = cluster.client(1)
    bob_tab2 = cluster.client(0)
    try:
        members = data_of(alice.subscribe(channel, user_id="alice", user_info={"n": "A"}))
        assert members["presence"]["count"] == 1

        # Bob joins on the other node: Alice (node 0) hears of it, Bob sees both.
        members = data_of(bob_tab1.subscribe(channel, user_id="bob", user_info={"n": "B"}))
        assert members["presence"]["count"] == 2
        assert members["presence"]["hash"] == {"alice": {"n": "A"}, "bob": {"n": "B"}}
        added = alice.wait_for("pusher_internal:member_added", channel)
        assert data_of(added) == {"user_id": "bob", "user_info": {"n": "B"}}

        # Bob's second tab, on Alice's node: still two members, no second member_added.
        members = data_of(bob_tab2.subscribe(channel, user_id="bob", user_info={"n": "B"}))
        assert members["presence"]["count"] == 2
        assert sorted(members["presence"]["ids"]) == ["alice", "bob"]
        assert sorted(u["id"] for u in sdk.users_info(channel)["users"]) == ["alice", "bob"]
        assert sdk.channel_info(channel, ["user_count"])["user_count"] == 2
        sdk.trigger(channel, "sentinel", "1")
        alice.wait_for("sentinel", channel)
        alice.assert_nothing(is_member_event("added", channel), within=0.5)

        # Bob closes the tab on node 1: he is still there through the other one.
        bob_tab1.close()
        sdk.trigger(channel, "sentinel", "2")
        alice.wait_for("sentinel", channel)
        alice.assert_nothing(is_member_event("removed", channel), within=1.0)
        assert sorted(u["id"] for u in sdk.users_info(channel)["users"]) == ["alice", "bob"]

        # The last tab leaves: now member_removed, once.
        bob_tab2.unsubscribe(channel)
        removed = alice.wait_for("pusher_internal:member_removed", channel)
        assert data_of(removed) == {"user_id": "bob"}
        alice.assert_nothing(is_member_event("removed", channel), within=0.5)
        assert sdk.users_info(channel)["users"] == [{"id": "alice"}]
    finally:
        for c in (alice, bob_tab1, bob_tab2):
            c.close()


def test_client_events_cross_nodes(cluster):
    channel = unique("private-chat-")
    with cluster.client(0) as a, cluster.client(1) as b:
        a.subscribe(channel)
        b.subscribe(channel)
        a.send_event("client-typing", {"who": "a"}, channel=channel)
        frame = b.wait_for("client-typing", channel)
        assert data_of(frame) == {"who": "a"}
        a.ping()
        assert not [f for f in a.pending if f.get("event") == "client-typing"]


def test_a_node_that_dies_is_swept_by_the_survivor(cluster, sdk):
    """A node SIGKILLed with a presence member on it: the other node declares it dead after
    ``websocket.node_timeout`` and removes its members (member_removed to the members left,
    once); the node is then started again."""
    channel = unique("presence-dying-")
    with cluster.client(0) as alice:
        alice.subscribe(channel, user_id="alice")
        doomed = cluster.client(1)
        doomed.subscribe(channel, user_id="bob")
        alice.wait_for("pusher_internal:member_added", channel)
        assert sdk.channel_info(channel, ["user_count"])["user_count"] == 2
        cluster.nodes[1].kill_group()
        node_timeout = cluster.settings.websocket.node_timeout
        removed = alice.wait_for("pusher_internal:member_removed", channel,
                                 timeout=node_timeout + 10)
        assert data_of(removed) == {"user_id": "bob"}
        assert sdk.users_info(channel)["users"] == [{"id": "alice"}]
        alice.assert_nothing(is_member_event("removed", channel), within=0.5)
        doomed.close()
    cluster.nodes[1].start()
    wait_http_ready(cluster.node_ready_url(1), cluster.nodes[1], 60)


# --------------------------------------------------------------------------- ordering


def test_order_and_no_loss_over_1000_events_on_one_channel(cluster):
    """1,000 events in 100 batches of 10, published by 4 concurrent senders, reach a subscriber
    on each node in one and the same order: each batch contiguous and in order (a batch is
    accepted atomically), each sender's batches in the order it sent them, nothing lost or
    doubled."""
    channel = unique("ordered-")
    senders, batches, per_batch = 4, 100, 10
    subs = [cluster.client(0), cluster.client(1), cluster.client(1)]
    try:
        for s in subs:
            s.subscribe(channel)

        def send(sender: int) -> None:
            sdk = cluster.pusher()
            for b in range(sender, batches, senders):
                sdk.trigger_batch([
                    {"channel": channel, "name": "seq", "data": {"b": b, "i": i}}
                    for i in range(per_batch)
                ])

        with ThreadPoolExecutor(senders) as pool:
            list(pool.map(send, range(senders)))

        sequences = []
        for s in subs:
            frames = s.collect("seq", channel, batches * per_batch, timeout=60)
            sequences.append([(d["b"], d["i"]) for d in map(data_of, frames)])
            s.assert_nothing(lambda f: f.get("event") == "seq", within=0.5)
        first = sequences[0]
        assert len(set(first)) == batches * per_batch
        assert all(seq == first for seq in sequences[1:]), "subscribers saw different orders"
        for k in range(0, len(first), per_batch):
            run = first[k : k + per_batch]
            assert run == [(run[0][0], i) for i in range(per_batch)], f"batch split: {run}"
        order = [b for b, i in first if i == 0]
        for sender in range(senders):
            mine = [b for b in order if b % senders == sender]
            assert mine == sorted(mine), f"sender {sender}'s batches reordered: {mine}"
    finally:
        for s in subs:
            s.close()


# --------------------------------------------------------------------------- bad input


def assert_still_works(cluster: Cluster, sdk: pusher.Pusher, client: PusherClient,
                       channel: str) -> None:
    marker = uuid.uuid4().hex
    assert sdk.trigger(channel, "ok", {"marker": marker}) == {}
    assert data_of(client.wait_for("ok", channel)) == {"marker": marker}


def test_bad_input_through_the_whole_stack(cluster, sdk):
    channel = unique("after-bad-input-")
    watcher = cluster.client(1)
    watcher.subscribe(channel)
    path = "/apps/1/events"
    body = {"name": "e", "channels": [channel], "data": "{}"}
    try:
        # Forged signature: 401, JSON body.
        with pytest.raises(pusher.errors.PusherBadAuth):
            cluster.pusher(secret="forged").trigger(channel, "e", {})
        resp = signed_request(cluster.pusher(secret="forged"), "POST", path, body)
        assert resp.status_code == 401 and resp.json()["code"] == 401
        assert_still_works(cluster, sdk, watcher, channel)

        # Expired timestamp (signed correctly, an hour old): 401.
        resp = signed_request(sdk, "POST", path, body, timestamp=int(time.time()) - 3600)
        assert resp.status_code == 401, resp.text
        assert "timestamp" in resp.json()["error"].lower()
        # The same request with a current timestamp goes through (the helper signs right).
        assert signed_request(sdk, "POST", path, body).status_code == 200
        watcher.wait_for("e", channel)
        assert_still_works(cluster, sdk, watcher, channel)

        # Oversized payload: 413 (the SDK lets 10-30 KB through; the app allows 10 KB).
        with pytest.raises(pusher.errors.PusherBadStatus, match="^413"):
            sdk.trigger(channel, "big", "x" * 15_000)
        assert_still_works(cluster, sdk, watcher, channel)

        # Too many channels (the SDK refuses more than 100 itself): 400.
        many = {"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "{}"}
        resp = signed_request(sdk, "POST", path, many)
        assert resp.status_code == 400 and resp.json()["code"] == 400, resp.text
        # Batch over the limit of 10: 400.
        batch = {"batch": [{"channel": channel, "name": "e", "data": "{}"}] * 11}
        resp = signed_request(sdk, "POST", "/apps/1/batch_events", batch)
        assert resp.status_code == 400, resp.text
        # Malformed JSON body, correctly signed: 400.
        resp = signed_request(sdk, "POST", path, body=b'{"name": "e", "channels": [')
        assert resp.status_code == 400, resp.text
        assert_still_works(cluster, sdk, watcher, channel)
        watcher.assert_nothing(lambda f: f.get("event") in ("big",), within=0.2)

        # Unknown app key on the WebSocket: pusher:error 4001, then close code 4001.
        with pytest.raises(RejectedConnection) as refused:
            PusherClient.connect(cluster.ws_url(1, key="no-such-key"))
        assert refused.value.error["data"]["code"] == 4001
        assert refused.value.close_code == 4001
        with cluster.client(1) as fresh:
            fresh.subscribe(channel)
            assert_still_works(cluster, sdk, fresh, channel)
        watcher.wait_for("ok", channel)

        # Malformed frames: pusher:error (the connection stays open and keeps working).
        for bad in ("this is not json", "[1, 2, 3]", '{"event": 42}',
                    '{"event": "pusher:subscribe", "data": 7}'):
            watcher.send_raw(bad)
            err = watcher.wait_for("pusher:error")
            assert isinstance(err["data"], dict) and "message" in err["data"], err
        watcher.ping()
        assert_still_works(cluster, sdk, watcher, channel)

        # Over-long channel name: a subscription error for that channel only.
        too_long = "x" * 250
        watcher.send_event("pusher:subscribe", {"auth": "", "channel": too_long})
        err = watcher.wait_for(
            lambda f: f.get("event") in ("pusher:subscription_error", "pusher:error")
        )
        assert err["event"] == "pusher:subscription_error" and err.get("channel") == too_long, err
        assert_still_works(cluster, sdk, watcher, channel)
        other = unique("still-subscribable-")
        watcher.subscribe(other)
        assert_still_works(cluster, sdk, watcher, other)
    finally:
        watcher.close()
    cluster.assert_alive()
