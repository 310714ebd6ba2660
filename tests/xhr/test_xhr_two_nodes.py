"""Two nodes behind a load balancer that is sticky by session id (docs/http-fallback.md):
each pusher-js session is served by one node whatever request it makes, and clients on
different nodes meet on their channels (the bus), as WebSocket clients do."""

from __future__ import annotations

import pytest
from _harness.sticky_lb import StickyBalancer

from tests.xhr.conftest import LIVENESS
from tests.xhr.xhr_harness import TRANSPORTS, wait_ready_counts

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("transport", TRANSPORTS)]


def test_sticky_sessions_on_two_nodes(cluster_factory, js_factory, transport) -> None:
    cluster = cluster_factory(nodes=2, workers=1, websocket=LIVENESS)
    balancer = StickyBalancer(cluster.node_ports).start()
    try:
        alice = js_factory(balancer.port, "alice", transport)
        alice.kind("connected", timeout=20)
        bob = js_factory(balancer.port, "bob", transport)
        bob.kind("connected", timeout=20)
        # The balancer gave the two sessions to different nodes (round robin for new ones).
        assert sorted(balancer.sessions.values()) == sorted(cluster.node_ports)
        for port in cluster.node_ports:
            wait_ready_counts(port, connections=1, http_sessions=1)
        channel = f"presence-two-nodes-{transport}"
        alice.send(op="subscribe", channel=channel)
        alice.kind("subscribed", channel=channel)
        bob.send(op="subscribe", channel=channel)
        assert bob.kind("subscribed", channel=channel)["members"]["count"] == 2
        alice.kind("member_added", channel=channel, id="bob")
        bob.send(op="trigger", channel=channel, event="client-hello", data={"from": "bob"})
        assert alice.kind("event", channel=channel, event="client-hello")["data"] == {
            "from": "bob"}
        cluster.pusher().trigger(channel, "news", {"n": 1})
        for client in (alice, bob):
            assert client.kind("event", channel=channel, event="news")["data"] == {"n": 1}
        bob.close()
        alice.kind("member_removed", channel=channel, id="bob")
        alice.close()
        for port in cluster.node_ports:
            wait_ready_counts(port, connections=0, http_sessions=0)
    finally:
        balancer.stop()
