"""``clarion.live.deliver`` in real worker processes: publishing to the bus, and not losing
events when worker processes are SIGKILLed."""

from __future__ import annotations

import base64
import json
import time

import orjson
import redis

from gateway.api.app import create_app
from gateway.protocol.signatures import sign_rest_request
from gateway.state.bus import BusEvent, decode
from gateway.state.history import ARMED_MS, History
from gateway.state.riders import LEASE_MS, Riders
from tests.workers.worker_harness import APP
from workers.celery_app import create_celery
from workers.tasks.live import TASK_NAME, Clients, deliver_with_riders


def _post(client, path: str, body: dict):
    raw = orjson.dumps(body)
    q = sign_rest_request(APP["key"], APP["secret"], "POST", path, {}, raw, int(time.time()))
    r = client.post(path, query_string=q, data=raw, content_type="application/json")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_worker_publishes_api_events_to_bus(settings, start_worker, bus, keys, redis_client):
    app = create_app(settings)
    client = app.test_client()
    worker = start_worker()
    _post(client, "/apps/1/events",
          {"name": "greet", "channels": ["a", "b"], "data": '{"hi":1}', "socket_id": "1.2"})
    _post(client, "/apps/1/batch_events", {"batch": [
        {"name": "n1", "channel": "a", "data": "one"},
        {"name": "n2", "channel": "presence-p", "data": "two"},
    ]})
    worker.wait_ready()
    assert bus.wait_for(lambda m: len(m) >= 4, 20), bus.messages
    time.sleep(0.2)  # anything extra would have arrived by now
    got = [decode(orjson.dumps(m)) for m in bus.messages]
    assert len(got) == 4
    # Each on its own channel's topic: a node receives only the channels it has subscribers on.
    assert bus.topics == [keys.bus_channel("1", e.channel) for e in got]

    serial_a = int(redis_client.get(keys.serial("1", "a")))
    serial_b = int(redis_client.get(keys.serial("1", "b")))
    serial_p = int(redis_client.get(keys.serial("1", "presence-p")))
    ordered = sorted(got, key=lambda e: (e.channel, e.serial))
    first_a = ordered[0].serial
    assert ordered == [
        BusEvent("1", "a", "greet", '{"hi":1}', first_a, "1.2", prev=0),
        BusEvent("1", "a", "n1", "one", serial_a, None, prev=first_a),
        BusEvent("1", "b", "greet", '{"hi":1}', serial_b, "1.2", prev=0),
        BusEvent("1", "presence-p", "n2", "two", serial_p, None, prev=0),
    ]
    # Acknowledged: nothing left in the queue or in the unacked hash.
    prefix = settings.redis.key_prefix
    assert redis_client.llen(f"{prefix}live") == 0
    assert redis_client.hlen(f"{prefix}unacked") == 0
    app.extensions["clarion"].close()


def _enqueue_burst(settings, keys, tasks: int, per_task: int) -> set[tuple[str, int]]:
    """Accept and enqueue ``tasks`` tasks of ``per_task`` events, as the API does; return
    every (channel, serial) given."""
    client = redis.Redis.from_url(settings.redis.url)
    history = History(client, keys, settings.history.max_events, settings.history.retention)
    celery = create_celery(settings)
    expected: set[tuple[str, int]] = set()
    data = "x" * 200
    for t in range(tasks):
        accepted = history.accept("1", [(f"ch-{t % 8}", "burst", data, None)] * per_task)
        payload = [[a.channel, a.event, a.data, a.exclude, a.serial, a.prev] for a in accepted]
        celery.send_task(TASK_NAME, args=("1", payload), queue="live")
        expected.update((a.channel, a.serial) for a in accepted)
    celery.close()
    client.close()
    return expected


def test_pool_children_killed_mid_burst_lose_nothing(settings, start_worker, bus, keys):
    """SIGKILL every pool child while a burst is being processed: the tasks they were running
    are rejected back to the queue (task_reject_on_worker_lost), not acknowledged, so every
    serial is still published. visibility_timeout is 300 s here, so the recovery cannot come
    from the unacked sweep."""
    # Few, large tasks (thousands of publishes each): a kill usually lands inside one. A
    # kill that finds the children idle between tasks proves nothing, so kill again until one
    # hits a running task (WorkerLostError) or the burst is over.
    expected = _enqueue_burst(settings, keys, tasks=60, per_task=5000)
    worker = start_worker()
    worker.wait_ready()
    assert bus.wait_for(lambda m: len(m) > 100, 20), worker.log()

    killed_mid_task = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and bus.seen < expected:
        for child in worker.children():
            child.kill()
        time.sleep(0.5)
        if "WorkerLostError" in worker.log():
            killed_mid_task = True
            break
    assert killed_mid_task, "no child was killed while running a task:\n" + worker.log()[-3000:]

    assert bus.wait_for(lambda m: bus.seen >= expected, 60), (
        f"{len(expected - bus.seen)} serials never published\n{worker.log()[-3000:]}"
    )
    # The children were replaced and the queue drained.
    assert len(worker.children()) == 2


def _unacked_events(r: redis.Redis, prefix: str) -> set[tuple[str, int]]:
    """(channel, serial) of every task message in the broker's unacked hash."""
    out = set()
    for raw in r.hvals(f"{prefix}unacked"):
        message = json.loads(raw)[0]
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out.update((channel, serial) for channel, _e, _d, _x, serial, _p in args[1])
    return out


def test_worker_killed_outright_tasks_restored_by_another(
    settings, start_worker, bus, keys, redis_client
):
    """SIGKILL the whole worker (main process too): the messages it had reserved stay in the
    broker's unacked hash, and another worker restores and runs them once visibility_timeout
    has passed (restore sweep every unacked_restore_interval).

    Known limit of kombu's Redis transport, asserted here so that it is visible: a message
    already popped by the worker's outstanding BRPOP but not yet recorded in ``unacked`` dies
    with the process. At most one task per killed worker; its events stay in the log, so the
    nodes fill them in (tests/e2e/test_e2e_faults.py)."""
    per_task = 5000  # long tasks: the kill lands inside one, not between two
    fast = settings.with_overrides(worker={"visibility_timeout": 2, "restore_interval": 1})
    expected = _enqueue_burst(fast, keys, tasks=40, per_task=per_task)
    first = start_worker(fast)
    first.wait_ready()
    assert bus.wait_for(lambda m: len(m) > 100, 20), first.log()
    first.kill()
    prefix = settings.redis.key_prefix
    stranded = _unacked_events(redis_client, prefix)
    assert stranded, "nothing was in flight when the worker was killed"

    second = start_worker(fast)
    second.wait_ready()
    assert bus.wait_for(lambda m: bus.seen >= stranded and len(expected - bus.seen) <= per_task,
                        60), (
        f"{len(expected - bus.seen)} serials never published\n{second.log()[-3000:]}"
    )
    deadline = time.monotonic() + 10
    while redis_client.hlen(f"{prefix}unacked") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_client.hlen(f"{prefix}unacked") == 0
    assert redis_client.llen(f"{prefix}live") == 0


def _riders_keys(redis_client, keys) -> list[bytes]:
    return redis_client.keys(f"{keys.prefix}lv:*")


def test_requests_ride_on_a_queued_task(settings, start_worker, bus, keys, redis_client):
    """While a task waits in the queue, later requests append their events to it instead of
    queueing their own; the worker publishes all of them, in order, and leaves no lv:* key."""
    app = create_app(settings)
    client = app.test_client()
    for i in range(5):
        _post(client, "/apps/1/batch_events", {"batch": [
            {"name": f"e{i}", "channel": "ride-a", "data": str(i)},
            {"name": f"e{i}", "channel": "ride-b", "data": str(i)},
        ]})
    prefix = settings.redis.key_prefix
    assert redis_client.llen(f"{prefix}live") == 1
    assert redis_client.llen(keys.live_pending) == 4
    assert 0 < redis_client.pttl(keys.live_armed) <= ARMED_MS

    worker = start_worker()
    worker.wait_ready()
    assert bus.wait_for(lambda m: len(m) >= 10, 20), worker.log()
    by_channel: dict[str, list[tuple[str, int]]] = {}
    for event in (decode(orjson.dumps(m)) for m in bus.messages):
        by_channel.setdefault(event.channel, []).append((event.data, event.serial))
    for channel in ("ride-a", "ride-b"):
        datas, serials = zip(*by_channel[channel], strict=True)
        assert datas == ("0", "1", "2", "3", "4")
        assert list(serials) == sorted(serials) and len(set(serials)) == 5
    deadline = time.monotonic() + 5
    while _riders_keys(redis_client, keys) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _riders_keys(redis_client, keys) == []

    # The task drained and released the armed key: the next request queues a task again.
    _post(client, "/apps/1/events", {"name": "after", "channel": "ride-a", "data": "5"})
    assert bus.wait_for(lambda m: len(m) >= 11, 20), worker.log()
    app.extensions["clarion"].close()


def test_a_running_task_holds_the_armed_key_as_a_short_lease(settings, keys, redis_client):
    """A take renews the armed key to a lease of LEASE_MS: a task that dies after taking
    riders (no worker here: the calls are made directly) holds later requests on the pending
    list for at most that long, then the next request queues a task of its own. What the dead
    task took is not kept anywhere: the nodes fill it from the log. A Redis that forgot the
    take script (restart) is served by loading it again."""
    app = create_app(settings)
    client = app.test_client()
    for i in range(3):
        _post(client, "/apps/1/events", {"name": "r", "channel": "redo", "data": str(i)})
    prefix = settings.redis.key_prefix
    assert redis_client.llen(f"{prefix}live") == 1 and redis_client.llen(keys.live_pending) == 2
    riders = Riders(redis_client, keys, "1")
    redis_client.script_flush()
    pipe = redis_client.pipeline(transaction=False)
    riders.take_in(pipe)
    assert len(riders.taken(pipe.execute(raise_on_error=False)[-1])) == 2
    assert 0 < redis_client.pttl(keys.live_armed) <= LEASE_MS
    assert _riders_keys(redis_client, keys) == [keys.live_armed.encode()]
    time.sleep(LEASE_MS / 1000 + 0.1)  # the task died: nothing renews the lease
    _post(client, "/apps/1/events", {"name": "r", "channel": "redo", "data": "3"})
    assert redis_client.llen(f"{prefix}live") == 2
    app.extensions["clarion"].close()


def test_a_task_out_of_time_leaves_riders_to_a_successor(settings, bus, keys, redis_client):
    """Past its time budget a task publishes what it took and stops taking: riders still
    waiting keep the armed key (so requests keep riding) and the caller is told to queue a
    successor; with none waiting the key is released."""
    app = create_app(settings)
    client = app.test_client()
    for i in range(3):
        _post(client, "/apps/1/events", {"name": "r", "channel": "late", "data": str(i)})
    riders = Riders(redis_client, keys, "1")
    assert riders.release() is True
    assert redis_client.exists(keys.live_armed) and redis_client.llen(keys.live_pending) == 2
    assert deliver_with_riders(Clients(redis_client, redis_client), riders, keys, "1", [],
                               budget=0) == (2, False)
    assert _riders_keys(redis_client, keys) == []
    assert bus.wait_for(lambda m: len(m) >= 2, 10)
    assert [decode(orjson.dumps(m)).data for m in bus.messages] == ["1", "2"]
    app.extensions["clarion"].close()
