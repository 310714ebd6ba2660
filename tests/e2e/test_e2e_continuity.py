"""Connection continuity, server side, with real processes: idempotent publish counted at real
WebSocket subscribers (two API processes racing, a worker SIGKILLed between repeats), and the
History API through the API's HTTP server, called by the official SDK."""

from __future__ import annotations

import json
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import pusher
import pusher.errors
import pytest
import requests
from _harness import Cluster
from _harness.load import Subscribers, verdict
from pusher.http import GET, POST, Request

pytestmark = pytest.mark.slow

HEADER, REPLAYED = "Idempotency-Key", "Idempotent-Replayed"
CHANNELS = ["idem-a", "idem-b"]


class Sent:
    """What was published, per channel (the shape ``load.verdict`` reads)."""

    def __init__(self) -> None:
        self.accepted: dict[str, list[int]] = {ch: [] for ch in CHANNELS}
        self.attempted = self.accepted
        self.at = time.time()

    def event(self, channel: str, n: int) -> dict[str, Any]:
        """The publish of number ``n``: the same body every time it is sent."""
        self.accepted[channel].append(n)
        return {"name": "seq", "channels": [channel],
                "data": json.dumps({"n": n, "t": self.at})}


def _subscribers(cluster: Cluster, per_node: int = 2) -> Subscribers:
    urls = [cluster.ws_url(i) for i in range(len(cluster.node_ports))]
    return Subscribers(urls, CHANNELS, per_node=per_node).start()


def _post(cluster: Cluster, port: int, body: dict[str, Any], key: str | None = None,
          path: str = "/apps/1/events") -> requests.Response:
    """A publish signed by the SDK's Request, sent to the API process on ``port``."""
    sdk = cluster.pusher(port=port)
    req = Request(sdk._pusher_client, POST, path, body)
    headers = {**req.headers, **({HEADER: key} if key else {})}
    return requests.post(req.url, data=req.body, headers=headers, timeout=10)


def _finish(subscribers: Subscribers, sent: Sent, settle: float = 2.5) -> None:
    """Wait for every event, then ``settle`` seconds more (two reconcile ticks and then some,
    so that a second delivery filled from the log would have arrived), and judge."""
    subscribers.wait_for(sent.accepted, 20)
    time.sleep(settle)
    subscribers.stop()
    problems = verdict(subscribers, SimpleNamespace(accepted=sent.accepted,
                                                    attempted=sent.attempted))
    assert not problems, "\n".join(problems[:20])
    for rec in subscribers.conns:
        assert {ch: sorted(ns) for ch, ns in rec.numbers.items()} == sent.accepted


def test_same_key_twice_delivers_once(cluster_factory):
    """Header (the Python SDK through its HTTP session) and body field (the SDK's signed
    Request): each request sent twice, each event received once by every subscriber."""
    cluster = cluster_factory(nodes=2, workers=1)
    subscribers = _subscribers(cluster)
    sent = Sent()
    sdk = cluster.pusher()
    session = sdk._pusher_client.http.session
    for n in range(3):
        session.headers[HEADER] = f"header-{n}"
        for _ in range(2):
            assert sdk.trigger("idem-a", "seq", {"n": n, "t": sent.at}) == {}
        sent.accepted["idem-a"].append(n)
    del session.headers[HEADER]
    for n in range(3):
        body = {**sent.event("idem-b", n), "idempotency_key": f"body-{n}"}
        replies = [_post(cluster, cluster.api_port, body) for _ in range(2)]
        assert [r.status_code for r in replies] == [200, 200]
        assert [r.headers.get(REPLAYED) for r in replies] == [None, "true"]
    _finish(subscribers, sent)


def test_racing_duplicates_on_two_api_processes_deliver_once(cluster_factory):
    """Each request goes to two API processes at the same instant with one key: exactly one
    accepts it, both answer 200 {}, every subscriber receives it once."""
    cluster = cluster_factory(nodes=2, workers=1)
    ports = [cluster.api_port, cluster.add_api()]
    subscribers = _subscribers(cluster)
    sent = Sent()
    replayed: list[str | None] = []
    for n in range(30):
        body = sent.event(CHANNELS[n % 2], n)
        start = threading.Barrier(2)
        replies: list[requests.Response] = []

        def send(port: int, body: dict[str, Any] = body, replies: list = replies,
                 start: threading.Barrier = start, n: int = n) -> None:
            start.wait()
            replies.append(_post(cluster, port, body, key=f"race-{n}"))

        threads = [threading.Thread(target=send, args=(p,)) for p in ports]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert [(r.status_code, r.content) for r in replies] == [(200, b"{}")] * 2
        replayed += sorted(str(r.headers.get(REPLAYED)) for r in replies)
    assert replayed == ["None", "true"] * 30  # one accepted, one replayed, every time
    _finish(subscribers, sent)


def test_worker_killed_between_repeats_delivers_once(cluster_factory):
    """The first request is accepted, the only worker is SIGKILLed (its task lost with it or
    redelivered later), the request is repeated while no worker runs and again once a new one
    is up: one delivery, filled from the log or by the restored task, never twice."""
    cluster = cluster_factory(nodes=2, workers=1,
                              worker={"concurrency": 1, "visibility_timeout": 3,
                                      "restore_interval": 1})
    subscribers = _subscribers(cluster)
    sent = Sent()
    body = sent.event("idem-a", 0)
    assert _post(cluster, cluster.api_port, body, key="killed").status_code == 200
    cluster.workers[0].kill_group(signal.SIGKILL)
    time.sleep(0.3)
    again = _post(cluster, cluster.api_port, body, key="killed")
    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true")
    cluster.replace_worker(0)
    cluster.wait_workers()
    third = _post(cluster, cluster.api_port, body, key="killed")
    assert (third.status_code, third.headers.get(REPLAYED)) == (200, "true")
    # A later event without a key, then long enough for the restored task to run.
    assert _post(cluster, cluster.api_port, sent.event("idem-b", 1)).status_code == 200
    _finish(subscribers, sent, settle=5.0)


def test_history_api_through_the_api_server(cluster_factory):
    """The SDK's signed GET through granian: pages, the position, and a forged signature."""
    cluster = cluster_factory(nodes=1, workers=1)
    sdk = cluster.pusher()
    sdk.trigger_batch([{"channel": "hist", "name": "e", "data": str(i)} for i in range(5)])

    def page(secret_sdk: pusher.Pusher = sdk, **params: str) -> Any:
        c = secret_sdk._pusher_client
        return c.http.send_request(Request(c, GET, "/apps/1/channels/hist/events", params))

    first = page(limit="3")
    assert [e["data"] for e in first["events"]] == ["0", "1", "2"] and first["has_more"]
    rest = page(after=str(first["next"]))
    assert [e["data"] for e in rest["events"]] == ["3", "4"]
    assert (rest["has_more"], rest["complete"], rest["serial"]) == (
        False, True, rest["events"][-1]["serial"])
    forger = cluster.pusher(secret="not-the-secret")
    with pytest.raises(pusher.errors.PusherBadAuth):
        page(forger)
    with pytest.raises(pusher.errors.PusherBadRequest, match="limit must be"):
        page(limit="0")
