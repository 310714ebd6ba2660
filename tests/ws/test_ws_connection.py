"""Connecting: the handshake frame, refusals with their codes, /ready, ping/pong, bad frames."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from websockets.frames import Opcode
from ws_harness import KEY, NodeThread, PusherClient


def http_get(node: NodeThread, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.settings.websocket.port}{path}",
                                    timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_connection_established_is_first_and_well_formed(node: NodeThread) -> None:
    c = PusherClient(node.url)
    msg = c.recv()
    assert msg["event"] == "pusher:connection_established"
    assert isinstance(msg["data"], str)  # double encoded: pysher json.loads it
    data = json.loads(msg["data"])
    assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
    assert data["activity_timeout"] == node.settings.websocket.activity_timeout
    c.close()


def test_socket_ids_are_unique(client) -> None:
    ids = {client().socket_id for _ in range(20)}
    assert len(ids) == 20


def test_ready_endpoint(node: NodeThread, client) -> None:
    client()
    status, body = http_get(node, "/ready")
    assert status == 200
    assert body["status"] == "ok"
    assert body["node"] == node.node.node_id
    assert body["connections"] == 1
    assert http_get(node, "/nothing-here")[0] == 404


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        ("unknown-key", "protocol=7", 4001),
        ("disabled-key", "protocol=7", 4003),
        (KEY, "protocol=3&client=js", 4007),
        (KEY, "protocol=8", 4007),
        (KEY, "protocol=seven", 4007),
    ],
)
def test_refusals_send_error_then_close_with_same_code(
    node: NodeThread, key: str, query: str, code: int
) -> None:
    c = PusherClient(node.url, key=key, query=query)
    msg = c.expect("pusher:error")
    assert msg["data"]["code"] == code  # an object: pysher reads data["code"]
    assert c.closed().code == code


def test_other_websocket_path_is_refused_with_4005(node: NodeThread) -> None:
    c = PusherClient(node.url, path="/socket/x")
    assert c.expect("pusher:error")["data"]["code"] == 4005
    assert c.closed().code == 4005


@pytest.mark.parametrize("query", ["", "client=Pysher&version=1.0.7&protocol=6",
                                   "protocol=5&extra=1&flash=false"])
def test_lenient_protocol_versions(node: NodeThread, query: str) -> None:
    c = PusherClient(node.url, query=query)
    c.established()
    c.close()


def test_connection_quota_4004(start_node) -> None:
    node = start_node(apps=[{"id": "1", "key": KEY, "secret": "s", "max_connections": 2}])
    first, second = PusherClient(node.url), PusherClient(node.url)
    first.established()
    second.established()
    third = PusherClient(node.url)
    assert third.expect("pusher:error")["data"]["code"] == 4004
    assert third.closed().code == 4004
    first.close()
    second.close()


def test_ping_pong(client) -> None:
    c = client()
    c.send("pusher:ping", {})
    assert c.expect("pusher:pong")["data"] == "{}"
    c.send("pusher:ping", "")  # pysher's form
    c.expect("pusher:pong")


def test_websocket_protocol_ping_is_answered(client) -> None:
    c = client()
    pong = c.ws.ping(b"hi")
    assert pong.wait(5)


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1,2,3]", '"a string"', '{"data":{}}', '{"event":""}',
     '{"event":"pusher:subscribe","data":{}}', '{"event":"client-x","data":{}}'],
)
def test_malformed_frames_get_invalid_message_and_stay_open(client, raw: str) -> None:
    c = client()
    c.ws.send(raw)
    err = c.expect("pusher:error")
    assert err["data"]["code"] is None
    assert err["data"]["message"].startswith("Invalid message format")
    c.send("pusher:ping", {})
    c.expect("pusher:pong")


def test_binary_frames_are_refused_but_kept_open(client) -> None:
    c = client()
    c.ws.send(b'{"event":"pusher:ping","data":{}}')
    assert c.expect("pusher:error")["data"]["code"] is None
    c.send("pusher:ping", {})
    c.expect("pusher:pong")


def test_unknown_pusher_events_are_ignored(client) -> None:
    c = client()
    c.send("pusher:something_new", {})
    c.send("pusher:ping", {})
    c.expect("pusher:pong")


def test_oversized_frame_closes(node: NodeThread, client) -> None:
    c = client()
    c.ws.send(json.dumps({"event": "client-x", "channel": "private-a",
                          "data": "x" * (node.settings.websocket.max_frame_bytes + 10)}))
    assert c.closed().code == 1009


def test_idle_client_is_pinged_then_closed_with_4201(start_node) -> None:
    node = start_node(activity_timeout=1, pong_timeout=0.5)
    c = PusherClient(node.url)
    c.established()
    # The websockets client answers WS pings itself, which would count as liveness:
    # a pusher-js style client that answers nothing is what we simulate here.
    protocol = c.ws.protocol
    send_frame = protocol.send_frame
    protocol.send_frame = lambda f: None if f.opcode is Opcode.PONG else send_frame(f)
    started = time.monotonic()
    assert c.expect("pusher:ping", timeout=3)["data"] == "{}"
    assert time.monotonic() - started >= 0.5
    err = c.recv(timeout=3)
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4201
    assert c.closed().code == 4201


def test_answering_pings_keeps_the_connection(start_node) -> None:
    node = start_node(activity_timeout=1, pong_timeout=0.5)
    c = PusherClient(node.url)
    c.established()
    for _ in range(2):
        c.expect("pusher:ping", timeout=3)
        c.send("pusher:pong", {})
    c.send("pusher:ping", {})
    c.wait_for("pusher:pong")
    c.close()
