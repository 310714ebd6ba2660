"""A provider (or FCM's OAuth token endpoint) that trickles its answer a byte at a time or
never answers: each send by a real push worker gives up at ``push.send_timeout`` (plus
scheduling slack), is counted as retried, and the retry delivers."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from beams_harness import APP_ID, SECRET, PushWorker, build_app, hex_token, make_settings, wait_for
from emulators.apns import Fault as ApnsFault
from emulators.fcm import Fault as FcmFault

from gateway.state.devices import DeviceStore
from gateway.state.publishes import PublishStore

pytestmark = pytest.mark.fault

SEND_TIMEOUT = 1.0  # beams_harness.make_settings
# Worker pick-up and Redis round trips on a loaded machine; without a total deadline a
# trickled answer holds a send for minutes.
SLACK = 1.0
FCM_BODY = {"notification": {"title": "Hi", "body": "there"}}
APNS_BODY = {"aps": {"alert": {"title": "Hi", "body": "there"}}}


def publish(settings, body: dict) -> str:
    client = build_app(settings).test_client()
    resp = client.post(f"/publish_api/v1/instances/{APP_ID}/publishes/interests", json=body,
                       headers={"Authorization": f"Bearer {SECRET}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["publishId"]


def interest_with(settings, platform: str, tokens: list[str]) -> str:
    devices = DeviceStore(redis.Redis.from_url(settings.redis.url, decode_responses=True),
                          settings.redis.key_prefix)
    topic = "slow-" + uuid.uuid4().hex[:10]
    for token in tokens:
        device_id, _ = devices.register(APP_ID, platform, token)
        devices.set_interests(APP_ID, device_id, [topic])
    return topic


def status(settings, pid: str) -> dict:
    store = PublishStore(redis.Redis.from_url(settings.redis.url, decode_responses=True),
                         settings.redis.key_prefix)
    return store.status(APP_ID, pid) or {}


def held(exchanges) -> list[float | None]:
    return [e.held for e in exchanges]


@pytest.mark.usefixtures("worker_log")
def test_a_trickled_fcm_answer_is_given_up_at_send_timeout(push_settings, fcm_emu):
    token = "fcm-trickle-" + uuid.uuid4().hex
    fcm_emu.script(token, FcmFault(503, trickle=0.5))
    seen = len(fcm_emu.exchanges)
    topic = interest_with(push_settings, "fcm", [token])
    pid = publish(push_settings, {"interests": [topic], "fcm": FCM_BODY})
    done = wait_for(lambda: (s := status(push_settings, pid))["status"] == "done" and s, 20)
    assert (done["delivered"], done["retried"], done["failed"]) == (1, 1, 0), done
    trickled = fcm_emu.exchanges[seen:]
    assert len(trickled) == 1 and trickled[0].held is not None, held(trickled)
    assert trickled[0].held <= SEND_TIMEOUT + SLACK, held(trickled)


@pytest.mark.usefixtures("worker_log")
def test_a_trickled_apns_answer_is_given_up_at_send_timeout(push_settings, apns_emu):
    token = hex_token()
    apns_emu.script(token, ApnsFault(trickle=0.5))
    seen = len(apns_emu.exchanges)
    topic = interest_with(push_settings, "apns", [token])
    pid = publish(push_settings, {"interests": [topic], "apns": APNS_BODY})
    done = wait_for(lambda: (s := status(push_settings, pid))["status"] == "done" and s, 20)
    assert (done["delivered"], done["retried"], done["failed"]) == (1, 1, 0), done
    trickled = apns_emu.exchanges[seen:]
    assert len(trickled) == 1 and trickled[0].held is not None, held(trickled)
    assert trickled[0].held <= SEND_TIMEOUT + SLACK, held(trickled)


BATCH = 8


@pytest.fixture
def fresh_worker(redis_server, fcm_emu, apns_emu, tmp_path):
    """A worker of its own: its FCM client has no OAuth token yet."""
    settings = make_settings(redis_server.url, f"tslow{uuid.uuid4().hex[:6]}:", fcm_emu,
                             apns_emu, fcm_concurrency=BATCH)
    worker = PushWorker(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield settings
    except BaseException:
        print(worker.log()[-6000:])
        raise
    finally:
        fcm_emu.token_fault = None
        worker.stop()


@pytest.mark.parametrize("fault", [FcmFault(hang=3.0), FcmFault(trickle=0.5)],
                         ids=["hang", "trickle"])
def test_a_stalled_oauth_endpoint_holds_a_batch_no_longer_than_send_timeout(
        fault, fresh_worker, fcm_emu):
    """Every send of a batch needs the token; while the token endpoint stalls, the batch's
    sends all give up within one send_timeout (not one after another)."""
    settings = fresh_worker
    tokens = [f"fcm-oauth-{n}-{uuid.uuid4().hex}" for n in range(BATCH)]
    topic = interest_with(settings, "fcm", tokens)
    fcm_emu.token_fault = fault
    seen = len(fcm_emu.exchanges)
    started = time.monotonic()
    pid = publish(settings, {"interests": [topic], "fcm": FCM_BODY})
    wait_for(lambda: status(settings, pid)["retried"] >= BATCH, 20)
    took = time.monotonic() - started
    fcm_emu.token_fault = None
    # One after another they would take BATCH x send_timeout (8 s); together about one
    # send_timeout, plus the publish's own path, which a loaded machine stretches.
    assert took < BATCH * SEND_TIMEOUT / 2, f"{BATCH} sends took {took:.2f}s to give up"
    done = wait_for(lambda: (s := status(settings, pid))["status"] == "done" and s, 20)
    assert (done["delivered"], done["failed"]) == (BATCH, 0), done
    stalled = [e for e in fcm_emu.exchanges[seen:] if e.path == "/token"]
    assert stalled and all(h is not None and h <= SEND_TIMEOUT + SLACK for h in held(stalled))
