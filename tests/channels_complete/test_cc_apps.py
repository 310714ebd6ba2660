"""Apps without a restart: `clarion apps` (add, list, rotate-secret, disable, enable) against
the running deployment's Redis; both nodes and the API pick the changes up."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pusher
import pytest
from _harness import PusherClient, RejectedConnection
from cc_harness import unique
from click.testing import CliRunner

from config import settings_to_env
from gateway.cli import main

pytestmark = pytest.mark.slow


def clarion(dep, *args: str) -> str:
    result = CliRunner().invoke(main, ["apps", *args], env=settings_to_env(dep.cluster.settings),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def eventually(fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, RejectedConnection, pusher.errors.PusherError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def refused_with(sdk: pusher.Pusher, error: type[Exception]) -> None:
    try:
        sdk.channels_info()
    except error:
        return
    raise AssertionError(f"not refused with {error.__name__} yet")


def sdk_for(dep, app_id: str, key: str, secret: str) -> pusher.Pusher:
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1",
                         port=dep.cluster.api_port, ssl=False, timeout=10)


def test_cc_apps_add_is_served_without_restart(dep):
    created = json.loads(clarion(dep, "add", "--json", "--set", "client_events=false"))
    app_id, key, secret = created["id"], created["key"], created["secret"]
    listed = json.loads(clarion(dep, "list", "--json"))
    assert {"id": app_id, "key": key, "enabled": True, "source": "store"} in listed
    assert {"id": "1", "key": "key-1", "enabled": True, "source": "config"} in listed
    sdk = sdk_for(dep, app_id, key, secret)
    url = [dep.cluster.ws_url(n, key=key) for n in (0, 1)]
    clients = [eventually(lambda u=u: PusherClient.connect(u, auth=sdk)) for u in url]
    channel = unique("private-new-app-")
    for c in clients:
        c.subscribe(channel)
    eventually(lambda: sdk.trigger(channel, "hello", "world"))
    for c in clients:
        assert c.wait_for("hello", channel)["data"] == "world"
    # Its settings apply: client events are off for this app.
    clients[0].send_event("client-x", {}, channel)
    assert clients[0].wait_for("pusher:error")["data"]["code"] == 4301
    for c in clients:
        c.close()


def test_cc_apps_rotate_secret_disable_enable(dep):
    old_sdk = dep.sdk("7")
    a, b = dep.client(0, "7"), dep.client(1, "7")
    new_secret = clarion(dep, "rotate-secret", "7", "--secret", "rotated-7").strip()
    assert new_secret == "rotated-7"
    new_sdk = dep.sdk("7", secret=new_secret)

    eventually(lambda: refused_with(old_sdk, pusher.errors.PusherBadAuth))
    assert new_sdk.channels_info() == {"channels": {}}
    # New signatures on a live connection: the old secret's are refused, the new one's taken.
    a.auth = old_sdk
    with pytest.raises(AssertionError, match="AuthError"):
        a.subscribe(unique("private-rot-"))
    a.auth = new_sdk
    a.subscribe(unique("private-rot-"))

    assert clarion(dep, "disable", "7").strip() == "app 7 disabled"
    for c in (a, b):
        err = c.wait_for("pusher:error")
        assert err["data"]["code"] == 4003
        assert c.wait_closed() == 4003
    with pytest.raises(RejectedConnection) as refused:
        dep.client(1, "7")
    assert refused.value.error["data"]["code"] == 4003 and refused.value.close_code == 4003
    eventually(lambda: refused_with(new_sdk, pusher.errors.PusherForbidden))
    listed = {r["id"]: r for r in json.loads(clarion(dep, "list", "--json"))}
    assert listed["7"]["enabled"] is False and listed["7"]["source"] == "config, changed in store"

    clarion(dep, "enable", "7")
    c = eventually(lambda: dep.client(0, "7", secret=new_secret))
    assert eventually(new_sdk.channels_info) == {"channels": {}}
    c.close()
