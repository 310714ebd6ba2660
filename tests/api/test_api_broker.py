"""The API with a broker other than the state Redis (``broker.url``): the accept script only
decides whether a request needs a task, and the API sends it with Celery's producer
(gateway/api/live_sender.py); a broker that cannot be reached loses the doorbell, not the
events."""

from __future__ import annotations

import time

import pytest
import redis

from config.settings import Settings
from gateway.api.app import create_app
from gateway.embedded_redis import free_port
from gateway.state.history import parse_member
from gateway.state.keys import Keys
from tests.api.api_harness import APP, queued_tasks, signed

DELIVER = "clarion.live.deliver"
EVENT = {"name": "e", "channels": ["a", "b"], "data": "x"}


def _app(redis_url: str, key_prefix: str, broker: str):
    settings = Settings(redis={"url": redis_url, "key_prefix": key_prefix},
                        broker={"url": broker}, apps=[APP])
    return create_app(settings)


@pytest.fixture
def broker_db(redis_url: str):
    """Another database of the test Redis, as the broker."""
    url = redis_url.rsplit("/", 1)[0] + "/1"
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def _metric(client, name: str) -> float:
    text = client.get("/metrics").data.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_the_task_goes_to_the_broker_and_riders_stay_in_redis(
        redis_url, redis_client, key_prefix, broker_db):
    broker_url, broker = broker_db
    app = _app(redis_url, key_prefix, broker_url)
    keys = Keys(key_prefix)
    client = app.test_client()
    try:
        assert signed(client, "POST", "/apps/1/events", APP, EVENT).status_code == 200
        # Celery's own message, in the broker; none in the state Redis.
        [(task, (app_id, events))] = queued_tasks(broker, key_prefix)
        assert redis_client.llen(f"{key_prefix}live") == 0
        logged = [parse_member(redis_client.zrange(keys.history("1", ch), 0, -1)[0])
                  for ch in ("a", "b")]
        assert (task, app_id) == (DELIVER, "1")
        assert events == [[ch, "e", "x", None, e.serial, e.prev]
                          for ch, e in zip("ab", logged, strict=True)]

        # While that task has not drained, the next request rides: nothing more is sent.
        assert signed(client, "POST", "/apps/1/events", APP, EVENT).status_code == 200
        assert broker.llen(f"{key_prefix}live") == 1
        assert redis_client.llen(keys.live_pending) == 1
        assert _metric(client, "clarion_api_tasks_enqueued_total") == 1

        redis_client.delete(keys.live_armed)  # the task drained
        assert signed(client, "POST", "/apps/1/events", APP, EVENT).status_code == 200
        assert broker.llen(f"{key_prefix}live") == 2
    finally:
        app.extensions["clarion"].close()
        broker.flushdb()


def test_a_broker_down_answers_200_and_keeps_the_events(redis_url, redis_client, key_prefix):
    """Nothing listens on the broker's port: the events are accepted (in the log), the failed
    send is counted, and the armed key stays for its lease so that the following requests
    ride instead of trying the broker again. A Beams publish, whose task is its only record,
    is refused with 503."""
    app = _app(redis_url, key_prefix, f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    keys = Keys(key_prefix)
    client = app.test_client()
    try:
        assert signed(client, "POST", "/apps/1/events", APP, EVENT).status_code == 200
        assert _metric(client, "clarion_api_enqueue_failures_total") == 1
        assert _metric(client, "clarion_api_tasks_enqueued_total") == 0
        assert [redis_client.zcard(keys.history("1", ch)) for ch in "ab"] == [1, 1]
        assert 0 < redis_client.pttl(keys.live_armed) <= 5000

        started = time.monotonic()
        assert signed(client, "POST", "/apps/1/events", APP, EVENT).status_code == 200
        assert time.monotonic() - started < 0.3, "a rider tried the broker"
        assert redis_client.llen(keys.live_pending) == 1
        assert _metric(client, "clarion_api_enqueue_failures_total") == 1

        beams = client.post("/publish_api/v1/instances/1/publishes/interests",
                            json={"interests": ["a"], "fcm": {"notification": {"title": "t"}}},
                            headers={"Authorization": f"Bearer {APP['secret']}"})
        assert beams.status_code == 503
        assert "broker cannot be reached" in beams.get_json()["description"]
    finally:
        app.extensions["clarion"].close()
