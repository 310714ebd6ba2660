"""(a) A subscriber's connection cut while 500 events are published at about 200/s: with the
extension every subscriber has all 500 after it reconnects, in order, once; without it
(pusher-js as it is) the events published while it was away are lost, which is what the cut
costs and what the extension is for."""

from __future__ import annotations

import time

import pytest

from tests.continuity.continuity_harness import Publisher, fleet_problems

pytestmark = pytest.mark.slow

TOTAL, RATE = 500, 200.0
CLIENTS = 40  # half pusher-js, half Laravel Echo


def cut_during_stream(cluster, proxy, channel: str, *, cut_after: int = 100,
                      outage: float = 1.0) -> tuple[Publisher, int, int]:
    """Publish TOTAL events at RATE; after ``cut_after`` of them cut every connection through
    the proxy and refuse new ones for ``outage`` seconds. The publisher, the connections cut,
    and the events published during the outage."""
    publisher = Publisher(cluster, [channel], rate=RATE).start(TOTAL)
    deadline = time.monotonic() + 10
    while publisher.sent < cut_after:
        assert time.monotonic() < deadline, "the publisher does not publish"
        time.sleep(0.005)
    before = publisher.sent
    dropped = proxy.cut()
    time.sleep(outage)
    missed = publisher.sent - before
    proxy.allow()
    publisher.join()
    return publisher, dropped, missed


def test_cut_connections_resume_with_every_event(cluster, proxy_factory, fleet_factory):
    channel = "resume-cut"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, CLIENTS, resume=True, flavor="mixed")
    fleet.subscribe([channel])

    started = time.monotonic()
    publisher, dropped, missed = cut_during_stream(cluster, proxy, channel)
    assert dropped == CLIENTS and missed >= 20, (dropped, missed)
    fleet.wait_received(TOTAL, timeout=30)
    took = time.monotonic() - started
    time.sleep(0.5)  # anything extra (a duplicate) would arrive meanwhile

    clients = fleet.report()
    assert fleet_problems(clients, publisher.accepted) == []
    for client in clients:
        assert len(client["socket_ids"]) == 2, client["socket_ids"]  # really reconnected
        assert client["subscribed"][channel] == 2
        assert client["failed"][channel] == []
    print(f"\n{CLIENTS} clients, {dropped} connections cut, {missed} events published during "
          f"the 1 s outage; all {TOTAL} at every client {took:.1f} s after the first was published")


def test_without_the_extension_the_cut_loses_events(cluster, proxy_factory, fleet_factory):
    # The same cut with pusher-js and Echo as they are: this is what test (a) guards against.
    channel = "plain-cut"
    proxy = proxy_factory([cluster.node_ports[0]])
    fleet = fleet_factory(proxy.port, CLIENTS, resume=False, flavor="mixed")
    fleet.subscribe([channel])

    publisher, dropped, missed = cut_during_stream(cluster, proxy, channel)
    fleet.wait_subscribed(2)
    time.sleep(1.0)

    lost = []
    for client in fleet.report():
        got = client["received"][channel]
        assert got == sorted(set(got)), "order and uniqueness hold; events are missing"
        assert set(got) < set(publisher.accepted[channel])
        lost.append(TOTAL - len(got))
    assert min(lost) >= missed * 0.8, (lost, missed)
    print(f"\nwithout the extension: each client lost {min(lost)}-{max(lost)} of {TOTAL} "
          f"({missed} published during the outage)")
