"""Origin checks: an app with allowed_origins refuses WebSocket upgrades from other origins
with pusher:error 4009 and close 4009 (Reverb's "Origin not allowed")."""

from __future__ import annotations

import json

import pytest
from _harness import PusherClient
from websockets.sync.client import connect

pytestmark = pytest.mark.slow


def open_with_origin(url: str, origin: str | None) -> tuple[dict, PusherClient]:
    kwargs = {"origin": origin} if origin is not None else {}
    try:
        ws = connect(url, open_timeout=5, legacy=True, **kwargs)  # websockets >= 17
    except TypeError:
        ws = connect(url, open_timeout=5, **kwargs)
    client = PusherClient(ws)
    return json.loads(ws.recv(5)), client


@pytest.mark.parametrize("origin", [
    "https://good.example", "https://app.trusted.example", "http://deep.app.trusted.example:8080",
])
def test_cc_allowed_origins_connect(dep, origin):
    first, client = open_with_origin(dep.url(1, "4"), origin)
    assert first["event"] == "pusher:connection_established"
    assert client.ping()["event"] == "pusher:pong"
    client.close()


@pytest.mark.parametrize("origin", [
    "https://evil.example", "http://good.example", "https://trusted.example.evil.example", None,
])
def test_cc_other_origins_refused_4009(dep, origin):
    first, client = open_with_origin(dep.url(0, "4"), origin)
    assert first["event"] == "pusher:error"
    assert first["data"]["code"] == 4009
    assert first["data"]["message"].startswith("Origin not allowed")
    assert client.wait_closed() == 4009


def test_cc_apps_without_allowed_origins_accept_any(dep):
    first, client = open_with_origin(dep.url(0, "1"), "https://anything.example")
    assert first["event"] == "pusher:connection_established"
    client.close()
