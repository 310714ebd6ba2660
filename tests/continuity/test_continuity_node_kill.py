"""(b) The node 200 clients are on is SIGKILLed while events flow; they reconnect to the other
node and miss nothing.

The clients reach the nodes through the harness's TCP proxy, which forwards each new
connection to the first node that accepts it: what a load balancer in front of several nodes
does, and how pusher-js is deployed (it takes one host, wsHost, and reconnects to it). A
killed node refuses connections, so the reconnections land on the other node, which has never
seen these clients: it replays what they missed from the channel logs in Redis.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.continuity.continuity_harness import Publisher, fleet_problems

pytestmark = [pytest.mark.slow, pytest.mark.fault]

PROCESSES, PER_PROCESS = 4, 50  # 200 clients, half pusher-js, half Laravel Echo
CHANNELS = [f"resume-kill-{i}" for i in range(10)]
TOTAL, RATE = 1200, 200.0  # 6 s; each client holds 2 channels: 240 events each


def test_clients_of_a_killed_node_resume_on_the_other(cluster_factory, proxy_factory,
                                                      fleet_factory):
    cluster = cluster_factory(nodes=2, workers=2)
    proxy = proxy_factory(cluster.node_ports)  # node 0 first, node 1 when 0 refuses
    fleets = []
    for p in range(PROCESSES):
        fleet = fleet_factory(proxy.port, PER_PROCESS, flavor="mixed")
        numbers = range(p * PER_PROCESS, (p + 1) * PER_PROCESS)
        fleet.ask("subscribe", channels=[[CHANNELS[i % 10], CHANNELS[(i + 3) % 10]]
                                         for i in numbers])
        fleets.append(fleet)
    for fleet in fleets:
        fleet.wait_subscribed(1, timeout=60)
    assert proxy.open_connections == PROCESSES * PER_PROCESS

    publisher = Publisher(cluster, CHANNELS, rate=RATE).start(TOTAL)
    while publisher.sent < TOTAL // 4:
        time.sleep(0.01)
    cluster.nodes[0].send(signal.SIGKILL)
    killed = time.monotonic()
    for fleet in fleets:
        fleet.wait_subscribed(2, timeout=60)
    back = time.monotonic() - killed
    publisher.join()
    for fleet in fleets:
        fleet.wait_received(2 * TOTAL // len(CHANNELS), timeout=60)
    done = time.monotonic() - killed
    time.sleep(0.5)

    assert not cluster.nodes[0].alive
    for fleet in fleets:
        clients = fleet.report()
        assert fleet_problems(clients, publisher.accepted) == []
        for client in clients:
            assert len(client["socket_ids"]) == 2
            assert all(failed == [] for failed in client["failed"].values())
    print(f"\n{PROCESSES * PER_PROCESS} clients: every one subscribed again on node 1 "
          f"{back:.1f} s after node 0 was killed; every event of the {TOTAL} at every client "
          f"{done:.1f} s after the kill")
