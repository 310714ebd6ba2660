"""A rolling restart under a stream: node A drained (SIGTERM) and started again on its port,
then node B, while 200 events/s flow; with the resume extension no client misses an event.

Two TCP proxies stand where load balancers stand, each checking the nodes' ``/ready`` as a
balancer's health check does (tests/_harness/proxy.py): one prefers node A, the other node B,
so that the clients start spread over both. A draining node answers 503 on ``/ready`` and
tells its clients to reconnect with 4200 (after ``websocket.drain_notice``, spread over
``websocket.drain_spread``); pusher-js reconnects at once, through its proxy, to the node
that is ready.
"""

from __future__ import annotations

import time

import pytest

from tests.continuity.continuity_harness import Publisher, fleet_problems

pytestmark = pytest.mark.slow

PROCESSES, PER_PROCESS = 4, 40  # 160 clients, half pusher-js, half Laravel Echo
CHANNELS = [f"drain-{i}" for i in range(10)]
RATE = 200.0
TOTAL = 3600  # 18 s at 200/s: both restarts happen while it flows
# The proxies check /ready every 0.1 s: the notice lets them see the 503 before the 4200s.
DRAIN = {"drain_notice": 0.3, "drain_spread": 1.0, "shutdown_grace": 1.0, "drain_timeout": 10.0}


def spread_fleets(cluster, proxy_factory, fleet_factory, resume: bool) -> list:
    """Half the client processes behind a proxy that prefers node A, half behind one that
    prefers node B; every client on two of the channels."""
    a, b = cluster.node_ports
    proxies = [proxy_factory([a, b]), proxy_factory([b, a])]
    fleets = []
    for p in range(PROCESSES):
        fleet = fleet_factory(proxies[p % 2].port, PER_PROCESS, flavor="mixed", resume=resume)
        numbers = range(p * PER_PROCESS, (p + 1) * PER_PROCESS)
        fleet.ask("subscribe", channels=[[CHANNELS[i % 10], CHANNELS[(i + 3) % 10]]
                                         for i in numbers])
        fleets.append(fleet)
    for fleet in fleets:
        fleet.wait_subscribed(1, timeout=60)
    assert [proxy.open_connections for proxy in proxies] == [PROCESSES * PER_PROCESS // 2] * 2
    return fleets


def rolling_restart(cluster, fleets, resume: bool) -> tuple[Publisher, list]:
    """The stream, and both nodes restarted one after the other while it flows."""
    publisher = Publisher(cluster, CHANNELS, rate=RATE).start(TOTAL)
    while publisher.sent < TOTAL // 8:
        time.sleep(0.01)
    restarts = [cluster.restart_node(0), cluster.restart_node(1)]
    assert publisher.sent < TOTAL, "the restarts outlasted the stream"
    publisher.join()
    for fleet in fleets:
        if resume:  # without, some events never come: the last ones get a moment instead
            fleet.wait_received(2 * TOTAL // len(CHANNELS), timeout=60)
    time.sleep(0.5 if resume else 2.0)
    return publisher, restarts


def assert_drained(restarts) -> None:
    for restart in restarts:
        assert restart.exit_code == 0
        # 503 (what tells the proxies to send no one there) until the listener closes.
        statuses = restart.ready_statuses
        assert statuses[statuses[0] == 200:] in ([503], [503, None]), statuses
        assert restart.drain_seconds < (DRAIN["drain_notice"] + DRAIN["drain_spread"]
                                        + DRAIN["shutdown_grace"] + 3)


def test_a_rolling_restart_loses_nothing_with_resume(cluster_factory, proxy_factory,
                                                    fleet_factory):
    cluster = cluster_factory(nodes=2, workers=2, websocket=DRAIN)
    fleets = spread_fleets(cluster, _health_checked(proxy_factory), fleet_factory, True)
    publisher, restarts = rolling_restart(cluster, fleets, True)

    assert_drained(restarts)
    for fleet in fleets:
        clients = fleet.report()
        assert fleet_problems(clients, publisher.accepted) == []
        for client in clients:
            # Told to reconnect (4200) by each node it was on: 2 or 3 connections (4100: sent
            # to a draining node by a proxy that had not seen its 503 yet).
            assert len(client["socket_ids"]) in (2, 3), client["socket_ids"]
            assert 4200 in client["codes"] and set(client["codes"]) <= {4100, 4200}, client
            assert all(failed == [] for failed in client["failed"].values())
    print(f"\nrolling restart, {PROCESSES * PER_PROCESS} clients with resume: 0 lost; drains "
          f"took {', '.join(f'{r.drain_seconds:.1f}' for r in restarts)} s")


def test_a_rolling_restart_without_resume_reports_the_lost(cluster_factory, proxy_factory,
                                                           fleet_factory):
    cluster = cluster_factory(nodes=2, workers=2, websocket=DRAIN)
    fleets = spread_fleets(cluster, _health_checked(proxy_factory), fleet_factory, False)
    publisher, restarts = rolling_restart(cluster, fleets, False)

    assert_drained(restarts)
    lost = duplicated = 0
    for fleet in fleets:
        for client in fleet.report():
            for channel, got in client["received"].items():
                expected = publisher.accepted[channel]
                lost += len(set(expected) - set(got))
                duplicated += len(got) - len(set(got))
                assert got == sorted(got), "out of order"
                assert 4200 in client["codes"] and set(client["codes"]) <= {4100, 4200}
    deliveries = len(fleets) * PER_PROCESS * 2 * TOTAL // len(CHANNELS)
    assert duplicated == 0
    # A plain client misses what its channels got between the 4200 and its new subscription,
    # less what the node it moves to had not delivered yet (events are ~50 ms from the API to
    # the nodes): 711 and 822 in all in two runs on a busy machine, none when the machine is
    # quiet and every reconnection takes less than that. Reported, as the issue asks.
    print(f"\nrolling restart, {PROCESSES * PER_PROCESS} clients without resume: {lost} of "
          f"{deliveries} deliveries lost ({100 * lost / deliveries:.2f} %)")


def _health_checked(proxy_factory):
    """The proxies of these tests check /ready, as a load balancer would."""
    return lambda upstreams: proxy_factory(upstreams, health_check=True)
