"""Delivery end to end: the official Beams SDK over HTTPS -> the API -> a real Celery worker
process -> real pyfcm / aioapns -> the FCM and APNs emulators, on real Redis."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from beams_harness import APP_ID, BAD_APP, SECRET, hex_token, wait_for
from emulators.apns import Fault as ApnsFault
from emulators.fcm import Fault as FcmFault
from pusher_push_notifications import PushNotifications

from gateway.state.devices import DeviceStore

pytestmark = pytest.mark.usefixtures("worker_log")

AUTH = {"Authorization": f"Bearer {SECRET}"}
FCM_BODY = {"notification": {"title": "Hi", "body": "there"}, "data": {"n": 1, "s": "x"}}
APNS_BODY = {"aps": {"alert": {"title": "Hi", "body": "there"}}, "extra": 1}


@pytest.fixture
def sdk(api_server):
    client = PushNotifications(APP_ID, SECRET, endpoint=api_server.endpoint)
    client.session.verify = (
        api_server.ca_file
    )  # the SDK uses session.send: env CA vars are not read
    return client


@pytest.fixture
def store(r, push_settings):
    return DeviceStore(r, push_settings.redis.key_prefix)


def interest() -> str:
    return "i-" + uuid.uuid4().hex[:12]


def status(api_server, pid, app=APP_ID):
    url = f"{api_server.url}/publish_api/v1/instances/{app}/publishes/{pid}"
    return requests.get(url, headers=AUTH, verify=api_server.ca_file, timeout=5).json()


def wait_done(api_server, pid, app=APP_ID, timeout=25):
    return wait_for(lambda: (s := status(api_server, pid, app))["status"] == "done" and s, timeout)


def device(store, platform, token, interests=(), app=APP_ID):
    device_id, _ = store.register(app, platform, token)
    if interests:
        store.set_interests(app, device_id, interests)
    return device_id


def publish(api_server, body, kind="interests", app=APP_ID):
    url = f"{api_server.url}/publish_api/v1/instances/{app}/publishes/{kind}"
    resp = requests.post(url, json=body, headers=AUTH, verify=api_server.ca_file, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["publishId"]


def test_sdk_publish_to_interests_on_both_platforms(sdk, api_server, store, fcm_emu, apns_emu):
    a, b = interest(), interest()
    fcm_tokens = [f"fcm-{uuid.uuid4().hex}" for _ in range(3)]
    apns_tokens = [hex_token() for _ in range(3)]
    for i, tok in enumerate(fcm_tokens):
        device(store, "fcm", tok, [a, b] if i == 0 else [a if i == 1 else b])
    for i, tok in enumerate(apns_tokens):
        device(store, "apns", tok, [a, b] if i == 0 else [b])
    device(store, "fcm", "fcm-other-" + uuid.uuid4().hex, [interest()])  # not targeted

    pid = sdk.publish_to_interests([a, b], {"fcm": FCM_BODY, "apns": APNS_BODY})["publishId"]
    done = wait_done(api_server, pid)
    assert (done["devices"], done["delivered"], done["failed"], done["removed"]) == (6, 6, 0, 0)

    for tok in fcm_tokens:
        (msg,) = fcm_emu.messages(tok)  # exactly one, even for the device in both interests
        assert msg["notification"] == {"title": "Hi", "body": "there"}
        assert msg["data"]["n"] == "1" and msg["data"]["s"] == "x"
        pusher = json.loads(msg["data"]["pusher"])
        assert pusher == {
            "instanceId": APP_ID,
            "publishId": pid,
            "hasDisplayableContent": True,
            "hasData": True,
        }
    for tok in apns_tokens:
        ((headers, body),) = apns_emu.messages(tok)
        assert body["aps"] == APNS_BODY["aps"] and body["extra"] == 1
        assert body["data"]["pusher"] == {"publishId": pid}
        assert headers["apns-topic"] == apns_emu.topic
        assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "10"


def test_sdk_publish_to_users_and_delete_user(sdk, api_server, store, fcm_emu, apns_emu):
    user = f"user/{uuid.uuid4().hex[:6]} x"  # the SDK quotes it; '/' stays as it is
    fcm_tok, apns_tok = "fcm-u-" + uuid.uuid4().hex, hex_token()
    jwt_token = sdk.generate_token(user)["token"]
    ids = []
    for platform, tok in (("fcm", fcm_tok), ("apns", apns_tok)):
        base = f"{api_server.url}/device_api/v1/instances/{APP_ID}/devices/{platform}"
        dev = requests.post(
            base, json={"token": tok, "metadata": {}}, verify=api_server.ca_file
        ).json()["id"]
        resp = requests.put(
            f"{base}/{dev}/user",
            headers={"Authorization": f"Bearer {jwt_token}"},
            verify=api_server.ca_file,
        )
        assert resp.status_code == 200, resp.text
        ids.append(dev)

    pid = sdk.publish_to_users([user, "nobody"], {"fcm": FCM_BODY, "apns": APNS_BODY})["publishId"]
    done = wait_done(api_server, pid)
    assert (done["devices"], done["delivered"]) == (2, 2)
    assert len(fcm_emu.messages(fcm_tok)) == 1 and len(apns_emu.messages(apns_tok)) == 1

    sdk.delete_user(user)
    assert store.user_devices(APP_ID, user) == [] and all(store.get(APP_ID, d) is None for d in ids)
    again = wait_done(api_server, sdk.publish_to_users([user], {"fcm": FCM_BODY})["publishId"])
    assert again["devices"] == 0 and len(fcm_emu.messages(fcm_tok)) == 1


def test_dead_tokens_are_removed(api_server, store, fcm_emu, apns_emu):
    topic = interest()
    fcm_dead = {
        name: f"fcm-{name}-{uuid.uuid4().hex}" for name in ("unregistered", "invalid", "foreign")
    }
    fcm_emu.unregistered.add(fcm_dead["unregistered"])
    fcm_emu.invalid.add(fcm_dead["invalid"])
    fcm_emu.foreign.add(fcm_dead["foreign"])
    apns_dead = {"unregistered": hex_token(), "bad": "not-a-hex-token", "wrong_topic": hex_token()}
    apns_emu.unregistered.add(apns_dead["unregistered"])
    apns_emu.wrong_topic.add(apns_dead["wrong_topic"])
    dead_ids = [device(store, "fcm", t, [topic]) for t in fcm_dead.values()]
    dead_ids += [device(store, "apns", t, [topic]) for t in apns_dead.values()]
    good_fcm, good_apns = (
        device(store, "fcm", "fcm-good-" + uuid.uuid4().hex, [topic]),
        device(store, "apns", hex_token(), [topic]),
    )

    done = wait_done(
        api_server, publish(api_server, {"interests": [topic], "fcm": FCM_BODY, "apns": APNS_BODY})
    )
    assert (done["devices"], done["delivered"], done["removed"], done["failed"]) == (8, 2, 6, 0)
    assert done["platforms"] == {"fcm": {"delivered": 1, "removed": 3},
                                 "apns": {"delivered": 1, "removed": 3}}
    assert all(store.get(APP_ID, d) is None for d in dead_ids)
    assert store.get(APP_ID, good_fcm) and store.get(APP_ID, good_apns)
    members = store.r.smembers(store.keys.interest(APP_ID, topic))
    assert {m if isinstance(m, str) else m.decode() for m in members} == {good_fcm, good_apns}


def test_fcm_429_with_retry_after_then_success(api_server, store, fcm_emu):
    tok = "fcm-429-" + uuid.uuid4().hex
    fcm_emu.script(tok, FcmFault(429, retry_after="1"))
    topic = interest()
    device(store, "fcm", tok, [topic])
    started = time.monotonic()
    done = wait_done(api_server, publish(api_server, {"interests": [topic], "fcm": FCM_BODY}))
    assert time.monotonic() - started >= 1.0  # Retry-After honoured (base backoff is 0.2 s)
    assert (done["delivered"], done["retried"], done["failed"]) == (1, 1, 0)
    assert len(fcm_emu.messages(tok)) == 1


def test_503_then_success_on_both(api_server, store, fcm_emu, apns_emu):
    ftok, atok = "fcm-503-" + uuid.uuid4().hex, hex_token()
    fcm_emu.script(ftok, FcmFault(503), FcmFault(500))
    apns_emu.script(atok, ApnsFault(503, "ServiceUnavailable"), ApnsFault(429, "TooManyRequests"))
    topic = interest()
    device(store, "fcm", ftok, [topic])
    device(store, "apns", atok, [topic])
    done = wait_done(
        api_server, publish(api_server, {"interests": [topic], "fcm": FCM_BODY, "apns": APNS_BODY})
    )
    assert (done["delivered"], done["retried"], done["failed"]) == (2, 4, 0)
    assert len(fcm_emu.messages(ftok)) == 1 and len(apns_emu.messages(atok)) == 1


def test_retries_are_bounded(api_server, store, fcm_emu):
    tok = "fcm-500x-" + uuid.uuid4().hex
    fcm_emu.script(tok, *[FcmFault(500)] * 10)
    topic = interest()
    device(store, "fcm", tok, [topic])
    done = wait_done(api_server, publish(api_server, {"interests": [topic], "fcm": FCM_BODY}))
    # push.max_attempts = 4: three retries, then failed; the token is kept
    assert (done["delivered"], done["retried"], done["failed"], done["removed"]) == (0, 3, 1, 0)
    assert store.get(APP_ID, store.r.get(store.keys.token(APP_ID, "fcm", tok)))
    fcm_emu.faults.pop(tok, None)


def test_provider_that_hangs_times_out_and_is_retried(api_server, store, fcm_emu, apns_emu):
    ftok, atok = "fcm-hang-" + uuid.uuid4().hex, hex_token()
    fcm_emu.script(ftok, FcmFault(503, hang=2.5))  # push.send_timeout is 1 s
    apns_emu.script(atok, ApnsFault(hang=True))
    topic = interest()
    device(store, "fcm", ftok, [topic])
    device(store, "apns", atok, [topic])
    done = wait_done(
        api_server, publish(api_server, {"interests": [topic], "fcm": FCM_BODY, "apns": APNS_BODY})
    )
    assert (done["delivered"], done["retried"], done["failed"]) == (2, 2, 0)
    assert len(fcm_emu.messages(ftok)) == 1 and len(apns_emu.messages(atok)) == 1


def test_bad_credentials_stop_the_publish(api_server, store, fcm_emu, apns_emu):
    topic = interest()
    toks = [
        ("fcm", "fcm-bad-" + uuid.uuid4().hex),
        ("fcm", "fcm-bad2-" + uuid.uuid4().hex),
        ("apns", hex_token()),
        ("apns", hex_token()),
    ]
    ids = [device(store, p, t, [topic], app=BAD_APP) for p, t in toks]
    pid = publish(
        api_server, {"interests": [topic], "fcm": FCM_BODY, "apns": APNS_BODY}, app=BAD_APP
    )
    done = wait_done(api_server, pid, app=BAD_APP)
    assert (done["devices"], done["delivered"], done["failed"], done["retried"]) == (4, 0, 4, 0)
    assert set(done["errors"]) == {"fcm", "apns"}
    assert "InvalidProviderToken" in done["errors"]["apns"]
    assert all(store.get(BAD_APP, d) for d in ids)  # credentials errors never remove tokens
    assert all(not fcm_emu.messages(t) and not apns_emu.messages(t) for _, t in toks)


def test_payload_refused_by_provider_fails_and_keeps_token(api_server, store, fcm_emu):
    tok = "fcm-big-" + uuid.uuid4().hex
    topic = interest()
    dev = device(store, "fcm", tok, [topic])
    body = {
        "interests": [topic],
        "fcm": {"data": {"blob": "x" * 5000}},
    }  # under 10 KiB, over FCM's 4 KiB
    done = wait_done(api_server, publish(api_server, body))
    assert (done["delivered"], done["failed"], done["removed"], done["retried"]) == (0, 1, 0, 0)
    assert store.get(APP_ID, dev) is not None


def test_many_devices_are_paged_and_each_gets_one(api_server, store, fcm_emu, apns_emu):
    topic, second = interest(), interest()
    ftoks = [f"fcm-many-{n}-{uuid.uuid4().hex}" for n in range(150)]
    atoks = [hex_token() for _ in range(150)]
    for n, t in enumerate(ftoks):
        device(store, "fcm", t, [topic, second] if n % 2 else [topic])
    for n, t in enumerate(atoks):
        device(store, "apns", t, [second] if n % 3 else [topic, second])
    done = wait_done(
        api_server,
        publish(api_server, {"interests": [topic, second], "fcm": FCM_BODY, "apns": APNS_BODY}),
    )
    assert (done["devices"], done["delivered"]) == (300, 300)
    assert all(len(fcm_emu.messages(t)) == 1 for t in ftoks)
    assert all(len(apns_emu.messages(t)) == 1 for t in atoks)
