"""The HTTP transports' wire, and what the node does with bad input, through plain HTTP against
a real node: clear HTTP errors, no crash, and no session or connection left behind."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.xhr.conftest import LIVENESS
from tests.xhr.xhr_harness import Session, messages, open_polling, ready, wait_ready_counts

pytestmark = pytest.mark.slow
def test_polling_session_by_hand(cluster) -> None:
    port = cluster.node_ports[0]
    s, socket_id = open_polling(port, "1/byhand01")
    assert s.message("pusher:subscribe", {"channel": "hand-news"}) == (204, None)
    assert s.send(b"[]") == (204, None)  # pusher-js's heartbeat
    got = messages(s.poll()[1])
    assert got[0]["event"] == "pusher_internal:subscription_succeeded"
    cluster.pusher().trigger("hand-news", "x", {"é": "☃"})
    status, body = s.poll()
    assert body.isascii()  # what pusher-js counts in characters is counted here in bytes
    assert json.loads(messages(body)[0]["data"]) == {"é": "☃"}
    assert socket_id


def test_errors_are_plain_http(cluster) -> None:
    port = cluster.node_ports[0]
    s, _ = open_polling(port, "2/errors01")
    assert s.send(b"not json")[0] == 400
    assert s.send(b'{"event": "x"}')[0] == 400
    assert s.send(b"[1, 2]")[0] == 400
    assert s.send(b"")[0] == 400
    assert s.send(json.dumps(["x" * 70_000]).encode())[0] == 413  # over max_frame_bytes
    assert s.send(b"[" + b'"' + b"y" * 300_000 + b'"]')[0] == 413  # over the body cap
    assert Session(port, "2/nosuchxx").message("pusher:ping", {})[0] == 404
    assert s.send(b"[]", {"Origin": "https://elsewhere.example"})[0] == 204  # no origins set
    c = s.conn()
    c.request("GET", f"{s.base}/xhr_send")
    assert c.getresponse().status == 405
    c = s.conn()
    c.request("POST", "/pusher/app/not/a/valid/path/xhr")
    answer = c.getresponse()
    assert answer.status == 404 and json.loads(answer.read())["code"] == 404
    c = s.conn()
    c.request("OPTIONS", f"{s.base}/xhr_send?t=1", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    answer = c.getresponse()
    assert answer.status == 204
    assert answer.getheader("Access-Control-Allow-Origin") == "https://app.example"
    assert answer.getheader("Access-Control-Allow-Headers") == "content-type"
    # A malformed request: 400, the connection closed, the node unmoved.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"POST /pusher/app/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    assert ready(port)["status"] == "ok"


def test_refusals_are_told_in_the_protocol(cluster) -> None:
    status, body = Session(cluster.node_ports[0], "3/nokey001", key="no-such-key").poll()
    assert status == 200
    lines = body.split(b"\n")
    assert lines[0] == b"o"
    assert messages(body)[0]["data"]["code"] == 4001
    assert lines[2].startswith(b"c[4001,")


def test_closed_session_answers_gone_then_is_forgotten(cluster) -> None:
    port = cluster.node_ports[0]
    s, _ = open_polling(port, "4/closed01")
    c, answer = s.stream()  # the session's receiver, until we drop it
    assert answer.status == 200
    c.close()  # the client left: closed at once, like a socket
    deadline = time.monotonic() + 5
    while (status := s.send(b"[]")[0]) == 204 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 410
    assert s.poll()[1].startswith(b"c[")
    wait_ready_counts(port, timeout=10, connections=0, http_sessions=0)


def test_streaming_by_hand(cluster) -> None:
    s = Session(cluster.node_ports[0], "5/stream01")
    c, answer = s.stream()
    assert answer.getheader("Transfer-Encoding") == "chunked"
    assert answer.readline() == b"o\n"
    assert messages(answer.readline())[0]["event"] == "pusher:connection_established"
    assert s.message("pusher:ping", {}) == (204, None)
    assert messages(answer.readline())[0]["event"] == "pusher:pong"
    # A silent stream gets heartbeats (activity_timeout is 2 s here); a client that does not
    # answer them (pusher-js does, with "[]") is pinged as well.
    assert b"h\n" in (answer.readline(), answer.readline())
    # A second receiver for a session that has one is refused in the protocol.
    c2, second = s.stream()
    assert second.read().startswith(b"c[2010,")
    c.close()


def test_limits_and_floods_leave_nothing_behind(cluster_factory) -> None:
    cluster = cluster_factory(nodes=1, workers=1,
                              websocket={**LIVENESS, "http_sessions_per_ip": 5})
    port = cluster.node_ports[0]
    held = []
    for i in range(5):
        s = Session(port, f"6/limit{i:03d}")
        c, answer = s.stream()
        assert answer.status == 200
        held.append(c)
    c, answer = Session(port, "6/limit999").stream()
    assert answer.status == 429 and json.loads(answer.read())["code"] == 429
    for c in held:
        c.close()
    wait_ready_counts(port, timeout=5, connections=0)
    # Floods: sends to sessions that do not exist, and to one that does, from 8 threads.
    s, _ = open_polling(port, "6/flood001")
    statuses: dict[int, int] = {}

    def flood(n: int) -> None:
        for i in range(150):
            target = s if i % 2 else Session(port, f"7/gone{n:04d}")
            status = target.message("pusher:ping", {})[0]
            statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.get(404, 0) == 600 and statuses.get(204, 0) + statuses.get(410, 0) == 600
    # The flooded session is either still there (its pongs pending) or cut off as a slow
    # client; either way it goes once its client stops polling.
    assert ready(port)["status"] == "ok"
    wait_ready_counts(port, timeout=15, connections=0, http_sessions=0)
