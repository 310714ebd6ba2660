"""Deliver live if online, push if not: a publish to users with Clarion's ``live`` field, by
the official Beams server SDK, on a deployment of two WebSocket nodes (real processes), real
pusher-js clients signed in on either node, real worker processes and the FCM emulator.

The race is defined in workers/push/live.py and docs/push.md: a user signed in when the
publish starts gets the event live, and is pushed as well unless one of its connections stays
signed in for ``push.live_grace``; a user offline then is pushed."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
from _harness.cluster import APP_ID, APP_SECRET
from _harness.fixtures import start_cluster, stop_cluster
from beams_harness import TlsServer, build_app, wait_for
from pusher_push_notifications import PushNotifications

from gateway.state.devices import DeviceStore

_spec = importlib.util.spec_from_file_location(
    "compat_pusher_js", Path(__file__).parents[1] / "compat" / "test_compat_pusher_js.py")
_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compat)
PusherJs = _compat.PusherJs
node_modules = _compat.node_modules  # the fixture: pusher-js from npm, cached

GRACE = 1.0
FCM = {"notification": {"title": "You have mail", "body": "from Clarion"}}
LIVE = {"event": "notice", "data": {"mail": 7}}  # the pusher-js driver binds "notice"


@pytest.fixture(scope="module")
def deployment(redis_server, fcm_emu, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    cluster = start_cluster(
        redis_server.url, tmp, nodes=2, workers=1,
        app={"push": {"fcm_service_account": fcm_emu.service_account()}},
        push={"fcm_base_url": fcm_emu.base_url, "live_grace": GRACE, "send_timeout": 2.0,
              "retry_base_delay": 0.2, "retry_max_delay": 1.0})
    api = TlsServer(build_app(cluster.settings), tmp)
    try:
        yield cluster, api
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        api.stop()
        stop_cluster(cluster)


@pytest.fixture
def signed_in(node_modules, deployment):
    cluster, _ = deployment
    started: list[PusherJs] = []

    def start(user_id: str, node: int) -> PusherJs:
        client = PusherJs(node_modules, cluster.node_ports[node], user_id)
        started.append(client)
        client.kind("connected")
        client.send(op="signin")
        client.wait(lambda o: o.get("event") == "pusher:signin_success")
        return client

    yield start
    for client in started:
        client.close()


def phone(deployment, r_url_user: str) -> str:
    """An FCM device of the user; returns its token."""
    import redis

    cluster, _ = deployment
    store = DeviceStore(redis.Redis.from_url(cluster.settings.redis.url, decode_responses=True),
                        cluster.settings.redis.key_prefix)
    token = f"fcm-live-{uuid.uuid4().hex}"
    device_id, _ = store.register(APP_ID, "fcm", token)
    assert store.set_user(APP_ID, device_id, r_url_user) == "ok"
    return token


def test_live_to_the_signed_in_push_to_the_others(deployment, signed_in, fcm_emu):
    cluster, api = deployment
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol, dave = (f"{n}-{tag}" for n in ("alice", "bob", "carol", "dave"))
    tokens = {u: phone(deployment, u) for u in (alice, bob, carol, dave)}
    on = {alice: signed_in(alice, 0), bob: signed_in(bob, 1), dave: signed_in(dave, 0)}

    sdk = PushNotifications(APP_ID, APP_SECRET, endpoint=api.endpoint)
    sdk.session.verify = api.ca_file
    pid = sdk.publish_to_users([alice, bob, carol, dave], {"fcm": FCM, "live": LIVE})["publishId"]

    for user in (alice, bob, dave):  # live on whichever node the user is signed in
        assert on[user].kind("user_event", event="notice")["data"] == LIVE["data"]
    on[dave].close()  # dave signs out within the grace: he is pushed as well

    def status() -> dict:
        import requests

        url = f"{api.url}/publish_api/v1/instances/{APP_ID}/publishes/{pid}"
        return requests.get(url, headers={"Authorization": f"Bearer {APP_SECRET}"},
                            verify=api.ca_file, timeout=5).json()

    try:
        done = wait_for(lambda: (s := status())["status"] == "done" and s, 20)
    except AssertionError:
        print(status(), *((cluster.tmp_dir / "logs" / f"worker{i}.log").read_text()[-3000:]
                          for i in range(len(cluster.workers))))
        raise
    assert done["users"] == {alice: "live", bob: "live", carol: "push", dave: "live+push"}
    assert (done["delivered"], done["failed"]) == (2, 0), done
    assert [len(fcm_emu.messages(tokens[u])) for u in (alice, bob, carol, dave)] == [0, 0, 1, 1]


def test_live_needs_users_and_a_valid_event(deployment):
    import requests

    _, api = deployment
    url = f"{api.url}/publish_api/v1/instances/{APP_ID}/publishes"
    auth = {"Authorization": f"Bearer {APP_SECRET}"}
    bad = [("interests", {"interests": ["x"], "fcm": FCM, "live": LIVE}, 422),
           ("users", {"users": ["u"], "fcm": FCM, "live": {"event": "pusher:x"}}, 422),
           ("users", {"users": ["u"], "fcm": FCM, "live": {"event": ""}}, 422),
           ("users", {"users": ["u"], "fcm": FCM, "live": {"event": "e", "extra": 1}}, 422),
           ("users", {"users": ["u"], "fcm": FCM, "live": {"event": "e", "data": "x" * 20000}},
            413),
           ("users", {"users": ["u"], "live": LIVE}, 422)]  # a push section is still needed
    for kind, body, code in bad:
        resp = requests.post(f"{url}/{kind}", json=body, headers=auth, verify=api.ca_file,
                             timeout=5)
        assert resp.status_code == code and resp.json()["description"], (body, resp.text)
