"""At most once per device: a run that takes over a publish never re-sends a device its dead
predecessor had marked ``sending`` (fresh or a scheduled retry); it counts it ``unknown``.
Still-``pending`` devices (claimed, never sent) and due ``waiting`` retries are sent."""

from __future__ import annotations

import time
import uuid

import pytest
from beams_harness import APP_ID

from gateway.state.devices import DeviceStore
from gateway.state.publishes import PENDING, SENDING, WAITING, PublishStore
from workers.push.delivery import run_publish


@pytest.fixture(params=[0.0, 0.5], ids=["quick", "slow-provider"])
def provider_delay(request, fcm_emu):
    """With a slow provider the run reads the interest's page while its own retry is still
    in flight (marked sending): that device is this run's, not a dead run's (it was once
    counted unknown as well as delivered)."""
    fcm_emu.delay = request.param
    yield request.param
    fcm_emu.delay = 0.0


def test_takeover_counts_sending_devices_unknown_and_sends_the_rest(
    r, push_settings, fcm_emu, provider_delay
):
    prefix = push_settings.redis.key_prefix
    devices = DeviceStore(r, prefix)
    store = PublishStore(r, prefix, push_settings.push.status_ttl)
    topic = "doubt-" + uuid.uuid4().hex[:8]
    names = ("new", "sending", "pending", "retry_sending", "retry_waiting")
    tokens = {n: f"fcm-doubt-{n}-{uuid.uuid4().hex}" for n in names}
    ids = {}
    for n, tok in tokens.items():
        ids[n], _ = devices.register(APP_ID, "fcm", tok)
        devices.set_interests(APP_ID, ids[n], [topic])

    pid = f"pubid-{uuid.uuid4()}"
    store.create(APP_ID, pid, "interests", [topic], {"fcm": {"notification": {"title": "d"}}})
    # The state a SIGKILLed run leaves behind.
    okey, rkey = store.keys.outcomes(APP_ID, pid), store.keys.retries(APP_ID, pid)
    r.hset(
        okey,
        mapping={
            ids["sending"]: SENDING,
            ids["pending"]: PENDING,
            ids["retry_sending"]: SENDING,
            ids["retry_waiting"]: WAITING,
        },
    )
    due = int(time.time() * 1000) - 1
    r.zadd(rkey, {ids["retry_sending"]: due, ids["retry_waiting"]: due})
    r.hset(
        store.keys.attempts(APP_ID, pid), mapping={ids["retry_sending"]: 1, ids["retry_waiting"]: 1}
    )

    steps: list[tuple[int, float]] = []
    step, result = 0, ""
    for _ in range(10):
        result = run_publish(push_settings, r, APP_ID, pid, step, lambda s, d: steps.append((s, d)))
        if result == "done":
            break
        step = steps[-1][0]
    assert result == "done"

    sent = {n: len(fcm_emu.messages(tok)) for n, tok in tokens.items()}
    assert sent == {"new": 1, "sending": 0, "pending": 1, "retry_sending": 0, "retry_waiting": 1}
    status = store.status(APP_ID, pid)
    assert (status["delivered"], status["unknown"], status["failed"], status["pending"]) == (
        3,
        2,
        0,
        0,
    )
    states = r.hmget(okey, [ids[n] for n in names])
    assert states == ["d", "u", "d", "u", "d"]
