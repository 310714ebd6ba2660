"""A publish to more than ``push.split_devices`` devices is split into parts that several
worker processes send at once (workers/push/delivery.py): every device once, in exactly one
part, the publish done with its last part; and a worker SIGKILLed mid-publish loses nothing
but its sends in flight (counted ``unknown``, never sent again), the others finish its parts."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import redis
from beams_harness import APP_ID, SECRET, PushWorker, build_app, make_settings, wait_for

from gateway.state.devices import DeviceStore
from gateway.state.publishes import PublishStore, part_of
from workers.push.delivery import run_publish

DEVICES = 400
PARTS = 4
CONCURRENCY = 4


@pytest.fixture
def split_settings(redis_server, fcm_emu, apns_emu):
    settings = make_settings(
        redis_server.url,
        f"tsplit{uuid.uuid4().hex[:6]}:",
        fcm_emu,
        apns_emu,
        fcm_concurrency=CONCURRENCY,
        task_time_budget=1.0,
        split_devices=DEVICES // PARTS,
        max_parts=PARTS,
    )
    return settings.with_overrides(worker={"visibility_timeout": 2, "restore_interval": 1})


@pytest.fixture
def rc(split_settings):
    client = redis.Redis.from_url(split_settings.redis.url, decode_responses=True)
    yield client
    client.close()


def _devices(settings, r, n, topic):
    devices = DeviceStore(r, settings.redis.key_prefix)
    tokens = [f"fcm-split-{i}-{uuid.uuid4().hex}" for i in range(n)]
    ids = devices.register_many(APP_ID, "fcm", tokens, [topic])
    return tokens, ids


def _publish(settings, topic):
    client = build_app(settings).test_client()
    resp = client.post(
        f"/publish_api/v1/instances/{APP_ID}/publishes/interests",
        json={"interests": [topic], "fcm": {"notification": {"title": "split"}}},
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["publishId"]


def test_parts_partition_the_devices():
    ids = [f"fcm-{uuid.uuid4()}" for _ in range(2000)]
    parts = Counter(part_of(i, PARTS) for i in ids)
    assert sorted(parts) == list(range(PARTS))
    assert all(n > 350 for n in parts.values()), parts  # about 500 each
    assert {part_of(i, 1) for i in ids} == {0}


def test_each_part_sends_only_its_own_devices(split_settings, rc, fcm_emu):
    """Driven step by step (no Celery): part 0's first run splits the publish and asks for
    parts 1-3; each part sends exactly its devices; the publish is done with the last part."""
    topic = "split-" + uuid.uuid4().hex[:8]
    tokens, ids = _devices(split_settings, rc, DEVICES, topic)
    store = PublishStore(rc, split_settings.redis.key_prefix)
    pid = f"pubid-{uuid.uuid4()}"
    store.create(APP_ID, pid, "interests", [topic], {"fcm": {"notification": {"title": "s"}}})
    started: list[int] = []

    def run(part):
        steps = [0]
        for _ in range(20):
            result = run_publish(split_settings, rc, APP_ID, pid, steps[-1],
                                 lambda s, _d: steps.append(s), part=part,
                                 start_part=started.append)
            if result == "done":
                return
        raise AssertionError(f"part {part} not done")

    run(0)
    assert started == [1, 2, 3]
    by_token = dict(zip(ids, tokens, strict=True))
    sent = {i for i in ids if fcm_emu.messages(by_token[i])}
    assert sent == {i for i in ids if part_of(i, PARTS) == 0}
    assert store.status(APP_ID, pid)["status"] == "running"  # three parts to go
    for part in started:
        run(part)
    status = store.status(APP_ID, pid)
    assert status["status"] == "done" and status["delivered"] == DEVICES, status
    assert all(len(fcm_emu.messages(t)) == 1 for t in tokens)
    # A redelivered first run neither splits again nor sends again.
    again: list[int] = []
    assert run_publish(split_settings, rc, APP_ID, pid, 0, lambda s, d: None,
                       start_part=again.append) == "done"
    assert again == [] and all(len(fcm_emu.messages(t)) == 1 for t in tokens)


def test_small_publish_is_not_split(split_settings, rc, fcm_emu):
    topic = "small-" + uuid.uuid4().hex[:8]
    tokens, _ = _devices(split_settings, rc, DEVICES // PARTS, topic)
    store = PublishStore(rc, split_settings.redis.key_prefix)
    pid = f"pubid-{uuid.uuid4()}"
    store.create(APP_ID, pid, "interests", [topic], {"fcm": {"notification": {"title": "s"}}})
    started: list[int] = []
    steps = [0]
    while run_publish(split_settings, rc, APP_ID, pid, steps[-1], lambda s, _d: steps.append(s),
                      start_part=started.append) != "done":
        assert len(steps) < 20
    assert started == []
    assert all(len(fcm_emu.messages(t)) == 1 for t in tokens)


def test_two_workers_send_one_publish_and_one_is_killed(split_settings, rc, fcm_emu, tmp_path):
    topic = "splitkill-" + uuid.uuid4().hex[:8]
    tokens, _ = _devices(split_settings, rc, DEVICES, topic)
    publishes = PublishStore(rc, split_settings.redis.key_prefix)
    workers = [PushWorker(split_settings, tmp_path / f"w{n}.log") for n in (1, 2)]
    third = None
    fcm_emu.delay = 0.02  # 400 sends, 4 at a time per part: a few seconds
    try:
        for w in workers:
            w.wait_ready()
        pid = _publish(split_settings, topic)
        wait_for(lambda: publishes.status(APP_ID, pid)["delivered"] >= 60, timeout=20)
        parts_running = rc.hget(publishes.keys.publish(APP_ID, pid), "parts")
        workers[0].kill()
        assert publishes.status(APP_ID, pid)["status"] != "done"
        third = PushWorker(split_settings, tmp_path / "w3.log")
        third.wait_ready()
        done = wait_for(
            lambda: (s := publishes.status(APP_ID, pid))["status"] == "done" and s, timeout=60
        )
    finally:
        fcm_emu.delay = 0.0
        for w in [*workers, third]:
            if w is not None:
                w.stop()

    assert parts_running == str(PARTS)
    counts = Counter({tok: len(fcm_emu.messages(tok)) for tok in tokens})
    assert [t for t, n in counts.items() if n > 1] == []  # at most once, across parts
    assert done["devices"] == DEVICES and done["failed"] == 0, done
    assert done["delivered"] + done["unknown"] == DEVICES, done
    # In doubt: at most the window of each part the killed worker's two processes had.
    assert done["unknown"] <= 2 * CONCURRENCY, done
    received = sum(1 for n in counts.values() if n == 1)
    assert done["delivered"] <= received <= done["delivered"] + done["unknown"]
    # Parts ran side by side: both workers took publish runs before the kill.
    for w in workers:
        assert "Task clarion.push.publish[" in w.log(), w.log()[-2000:]
