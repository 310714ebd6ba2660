"""What an idle connection keeps: no handshake headers, one Membership per shared channel."""

from __future__ import annotations

from typing import Any, cast

from ws_harness import NodeThread

from gateway.ws.connection import Connection


def connection(node: NodeThread, socket_id: str | None) -> Connection:
    assert node.node is not None and socket_id is not None
    return cast(Connection, node.node.hub.connections[socket_id])


def in_loop(node: NodeThread, fn: Any) -> Any:
    async def run() -> Any:
        return fn()
    return node.call(run)


def test_handshake_headers_are_released(node: NodeThread, client) -> None:
    c = client()
    transport = in_loop(node, lambda: connection(node, c.socket_id).transport)
    assert len(transport.request.headers) == 0
    assert len(transport.response.headers) == 0
    assert transport.request.path.startswith(b"/app/")


def test_equal_memberships_are_shared_presence_ones_are_not(node: NodeThread, client) -> None:
    a, b = client(), client()
    for c in (a, b):
        c.subscribed("news")
        c.subscribe_private("private-desk")
    a.subscribe_presence("presence-room", "a")
    b.subscribe_presence("presence-room", "b")

    def memberships() -> tuple[dict, dict]:
        return (dict(connection(node, a.socket_id).subscriptions),
                dict(connection(node, b.socket_id).subscriptions))

    mine, theirs = in_loop(node, memberships)
    assert mine["news"] is theirs["news"]
    assert mine["private-desk"] is theirs["private-desk"]
    assert mine["presence-room"].user_id == "a" and theirs["presence-room"].user_id == "b"
