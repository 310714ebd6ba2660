"""One slow token never holds up the others: with ``send_timeout = 30``, a provider that never
answers one device delays only that device. Every other device on the same interest, on its
own platform and on the other one, is delivered (by the emulators, and in the publish status)
within 1 s of the publish, while the hung send is still waiting for its answer."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from beams_harness import APP_ID, PushWorker, hex_token, make_settings, wait_for
from emulators.apns import Fault as ApnsFault
from emulators.fcm import Fault as FcmFault
from test_push_slow_provider import APNS_BODY, FCM_BODY, interest_with, publish, status

from gateway.state.devices import DeviceStore

pytestmark = pytest.mark.fault

SEND_TIMEOUT = 30.0
HEALTHY = 20  # per platform: more than one old-style batch would have held


@pytest.fixture
def patient_worker(redis_server, fcm_emu, apns_emu, tmp_path):
    """A worker of its own, one pool process (the one that was warmed up is the one that
    sends), so no other test's hung send is in it."""
    settings = make_settings(redis_server.url, f"tiso{uuid.uuid4().hex[:6]}:", fcm_emu,
                             apns_emu, send_timeout=SEND_TIMEOUT, fcm_concurrency=8,
                             apns_concurrency=8, task_time_budget=60.0)
    worker = PushWorker(settings, tmp_path / "worker.log", concurrency=1)
    try:
        worker.wait_ready()
        # Warm: OAuth token fetched, APNs connection open (not what is being measured).
        warm = interest_with(settings, "fcm", ["fcm-warm-" + uuid.uuid4().hex])
        DeviceStore(redis.Redis.from_url(settings.redis.url, decode_responses=True),
                    settings.redis.key_prefix).set_interests(
            APP_ID, DeviceStore(redis.Redis.from_url(settings.redis.url),
                                settings.redis.key_prefix).register(APP_ID, "apns",
                                                                    hex_token())[0], [warm])
        pid = publish(settings, {"interests": [warm], "fcm": FCM_BODY, "apns": APNS_BODY})
        wait_for(lambda: status(settings, pid)["status"] == "done", 20)
        yield settings
    except BaseException:
        print(worker.log()[-6000:])
        raise
    finally:
        worker.stop()


def register(settings, platform: str, tokens: list[str], interest: str) -> None:
    devices = DeviceStore(redis.Redis.from_url(settings.redis.url, decode_responses=True),
                          settings.redis.key_prefix)
    for token in tokens:
        device_id, _ = devices.register(APP_ID, platform, token)
        devices.set_interests(APP_ID, device_id, [interest])


@pytest.mark.parametrize("hung_platform", ["fcm", "apns"])
def test_a_hung_send_delays_only_its_own_device(hung_platform, patient_worker, fcm_emu,
                                                 apns_emu):
    settings = patient_worker
    fcm_tokens = [f"fcm-iso-{n}-{uuid.uuid4().hex}" for n in range(HEALTHY)]
    apns_tokens = [hex_token() for _ in range(HEALTHY)]
    if hung_platform == "fcm":
        hung = "fcm-hung-" + uuid.uuid4().hex
        fcm_emu.script(hung, FcmFault(hang=SEND_TIMEOUT * 2))
        fcm_tokens.insert(HEALTHY // 2, hung)
    else:
        hung = hex_token()
        apns_emu.script(hung, ApnsFault(hang=True))
        apns_tokens.insert(HEALTHY // 2, hung)
    interest = "iso-" + uuid.uuid4().hex[:10]
    register(settings, "fcm", fcm_tokens, interest)
    register(settings, "apns", apns_tokens, interest)
    healthy = {"fcm": [t for t in fcm_tokens if t != hung],
               "apns": [t for t in apns_tokens if t != hung]}

    started = time.monotonic()
    pid = publish(settings, {"interests": [interest], "fcm": FCM_BODY, "apns": APNS_BODY})

    def all_healthy_arrived() -> bool:
        return all(fcm_emu.messages(t) for t in healthy["fcm"]) and all(
            apns_emu.messages(t) for t in healthy["apns"])

    wait_for(all_healthy_arrived, 5, interval=0.01)
    arrived = time.monotonic() - started
    now = wait_for(lambda: (s := status(settings, pid))["delivered"] >= 2 * HEALTHY and s, 5,
                   interval=0.01)
    recorded = time.monotonic() - started
    assert arrived < 1.0, f"healthy devices took {arrived:.2f}s to arrive"
    assert recorded < 1.0, f"healthy outcomes took {recorded:.2f}s to be recorded"
    # The hung device is still in flight: neither delivered nor given up on yet.
    assert now["status"] == "running" and now["delivered"] == 2 * HEALTHY, now
    assert (now["failed"], now["retried"], now["unknown"]) == (0, 0, 0), now
    sent_to_hung = fcm_emu.messages(hung) if hung_platform == "fcm" else apns_emu.messages(hung)
    assert sent_to_hung == []
