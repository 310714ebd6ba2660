"""A broker other than the state Redis (``broker.url``): RabbitMQ, started by the test harness
(tests/_harness/rabbitmq.py), or a second Redis. Real API, nodes, Celery workers and Pusher
clients; the channels' logs stay in the state Redis, every task goes through the broker.

Skipped, with the reason, where rabbitmq-server is not installed.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
import redis
from _harness import Cluster
from _harness.load import Stream, Subscribers, finish, kill_worker_repeatedly, percentile
from _harness.rabbitmq import RabbitMQ

from gateway.api.deliver_message import DeliverMessage
from gateway.state.history import ARMED_MS, History
from gateway.state.keys import Keys
from tests.webhooks.harness import Receiver

pytestmark = pytest.mark.slow

CHANNELS = [f"seq-{i}" for i in range(20)]
WEBHOOKS = {"debounce": 0.2, "batch_window": 0.05, "tick": 0.05, "jitter": 0.0,
            "allowed_networks": ["127.0.0.0/8"]}


def _vhost(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _queues(server: RabbitMQ, vhost: str) -> dict[str, int]:
    """Queue name -> consumers, as RabbitMQ lists them."""
    out = server.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "consumers")
    return {name: int(n) for name, n in (line.split() for line in out.splitlines() if line)}


def _broker_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    """kombu's keys (queues, bindings, unacked) under ``prefix`` in a Redis."""
    return [k for k in client.scan_iter(f"{prefix}*")
            if k[len(prefix):].split(b":")[0] in (b"live", b"push", b"webhooks", b"unacked",
                                                  b"unacked_index", b"_kombu.binding.live")]


def _api_metric(cluster: Cluster, name: str) -> float:
    with urllib.request.urlopen(f"{cluster.api_url}/metrics", timeout=5) as resp:  # noqa: S310
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def _publish_and_receive(cluster: Cluster, node: int, channel: str, count: int) -> None:
    client = cluster.client(node)
    try:
        client.subscribe(channel)
        sdk = cluster.pusher()
        for i in range(count):
            sdk.trigger(channel, "e", {"i": i})
        got = [json.loads(f["data"])["i"] for f in client.collect("e", channel, count, 15)]
        assert got == list(range(count))
    finally:
        client.close()


def test_events_webhooks_and_push_go_through_rabbitmq(rabbitmq_server, rabbitmq_url,
                                                      cluster_factory, redis_client):
    """Events published through the API reach subscribers on two nodes, in order, with the
    tasks on RabbitMQ (none in the state Redis); webhooks and a Beams publish go through it
    too."""
    receiver = Receiver()
    try:
        cluster = cluster_factory(
            nodes=2, workers=1, broker={"url": rabbitmq_url}, webhooks=WEBHOOKS,
            app={"webhooks": [{"url": receiver.url(), "events": ["channel_occupied"]}]})
        for node in (0, 1):
            _publish_and_receive(cluster, node, f"room-{node}", 20)
        assert _api_metric(cluster, "clarion_api_tasks_enqueued_total") >= 1

        # The webhook: reported by a node, enqueued by the webhooks leader, delivered.
        deadline = time.monotonic() + 15
        while not receiver.delivered() and time.monotonic() < deadline:
            time.sleep(0.1)
        names = [e["name"] for r in receiver.delivered() for e in json.loads(r.body)["events"]]
        assert "channel_occupied" in names

        # A Beams publish (no devices): the push worker runs it to the end.
        request = urllib.request.Request(
            f"{cluster.api_url}/publish_api/v1/instances/1/publishes/interests",
            data=json.dumps({"interests": ["nobody"],
                             "fcm": {"notification": {"title": "t"}}}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer app-secret"})
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            publish_id = json.loads(resp.read())["publishId"]
        status = {}
        deadline = time.monotonic() + 15
        while status.get("status") != "done" and time.monotonic() < deadline:
            status_request = urllib.request.Request(
                f"{cluster.api_url}/publish_api/v1/instances/1/publishes/{publish_id}",
                headers={"Authorization": "Bearer app-secret"})
            with urllib.request.urlopen(status_request, timeout=10) as resp:  # noqa: S310
                status = json.loads(resp.read())
            time.sleep(0.1)
        assert status.get("status") == "done", status

        # Every queue is RabbitMQ's, consumed by the workers; nothing of kombu's in Redis.
        queues = _queues(rabbitmq_server, _vhost(rabbitmq_url))
        assert {q: queues.get(q, 0) >= 1 for q in ("live", "push", "webhooks")} == {
            "live": True, "push": True, "webhooks": True}, queues
        assert _broker_keys(redis_client, cluster.settings.redis.key_prefix.encode()) == []
    finally:
        receiver.close()


def test_a_second_redis_as_the_broker(dedicated_redis, cluster_factory, redis_client):
    """``broker.url`` another Redis: the tasks are queued there (kombu's keys under the key
    prefix), the logs stay in the state Redis."""
    cluster = cluster_factory(nodes=1, workers=1, broker={"url": dedicated_redis.url})
    _publish_and_receive(cluster, 0, "room", 10)
    prefix = cluster.settings.redis.key_prefix.encode()
    broker = redis.Redis.from_url(dedicated_redis.url)
    try:
        assert broker.exists(prefix + b"_kombu.binding.live")
        assert _broker_keys(redis_client, prefix) == []
        assert redis_client.exists(Keys(prefix.decode()).history("1", "room"))
    finally:
        broker.close()


@pytest.mark.fault
def test_live_worker_sigkilled_under_a_stream_on_rabbitmq(rabbitmq_url, cluster_factory):
    """The live worker (main process and pool) is SIGKILLed three times during a
    300 events/s stream and replaced a second later: RabbitMQ gives its unacknowledged task
    back at once (the connection closed), nothing accepted is lost or repeated."""
    cluster = cluster_factory(nodes=2, workers=1, broker={"url": rabbitmq_url},
                              worker={"concurrency": 1})
    urls = [cluster.ws_url(i) for i in range(2)]
    subscribers = Subscribers(urls, CHANNELS, per_node=2).start()
    stream = Stream(cluster, CHANNELS, 300).start()
    time.sleep(2)
    kills = kill_worker_repeatedly(cluster, 3)
    finish(stream, subscribers)
    assert not stream.refused, stream.refused[:5]
    after = [x for k in kills for x in subscribers.latencies(since=k, until=k + 3)]
    print(f"{stream.count} events; in the 3 s after each kill: p50 "
          f"{percentile(after, 0.5) * 1000:.0f} ms, max {max(after) * 1000:.0f} ms")
    assert max(after) < 3.0


@pytest.mark.fault
def test_rabbitmq_restarted_under_a_stream(dedicated_rabbitmq, cluster_factory):
    """RabbitMQ stops for 3 s during a 200 events/s stream. The API goes on answering 200 (the
    events are in the logs; a task it cannot queue is a lost doorbell), the nodes deliver from
    the logs meanwhile, the workers reconnect, and delivery is live again once they have."""
    url = dedicated_rabbitmq.url(dedicated_rabbitmq.new_vhost())
    cluster = cluster_factory(nodes=2, workers=1, broker={"url": url},
                              worker={"concurrency": 1})
    urls = [cluster.ws_url(i) for i in range(2)]
    subscribers = Subscribers(urls, CHANNELS, per_node=2).start()
    stream = Stream(cluster, CHANNELS, 200).start()
    time.sleep(3)
    down = time.time()
    dedicated_rabbitmq.restart(downtime=3.0)
    back = time.time()
    # Celery's consumer retries its connection 2, 4, 6, ... s apart: the workers are back
    # within that backoff (the nodes deliver from the logs until then).
    cluster.wait_workers(timeout=40)
    consuming = time.time()
    time.sleep(5)
    finish(stream, subscribers)
    assert not stream.refused, stream.refused[:5]
    assert stream.count > 2000
    assert _api_metric(cluster, "clarion_api_enqueue_failures_total") >= 1, (
        "RabbitMQ was down but no send failed: the test did not test it")
    cluster.assert_alive()
    for worker in cluster.workers:
        assert worker.alive, worker.describe_exit() + "\n" + worker.log_tail(3000)
    during = subscribers.latencies(since=down, until=consuming)
    # A worker answers pings a moment before its consumer has taken the queue back.
    settled = subscribers.latencies(since=consuming + 2)
    print(f"{stream.count} events; RabbitMQ down {back - down:.1f} s, workers consuming again "
          f"{consuming - back:.1f} s later: latency p99 {percentile(during, 0.99) * 1000:.0f} "
          f"ms meanwhile, p50 {percentile(settled, 0.5) * 1000:.0f} ms 2 s after")
    assert percentile(during, 0.99) < 3.0, "the nodes did not fill from the logs"
    assert percentile(settled, 0.5) < 0.2, "delivery did not become live again"


def test_api_dying_between_the_script_and_the_send(rabbitmq_url, cluster_factory,
                                                   redis_client):
    """The state an API process leaves when it dies after the accept script took the armed key
    but before it sent the task (made here by running the script as the API does, without the
    send): the event reaches the subscriber from the log (reconcile); requests meanwhile ride
    on the pending list and are delivered the same way; the first request after the lease
    queues a task again, which drains the pending list."""
    cluster = cluster_factory(nodes=1, workers=1, broker={"url": rabbitmq_url})
    settings = cluster.settings
    keys = Keys(settings.redis.key_prefix)
    client = cluster.client(0)
    try:
        client.subscribe("room")
        history = History(redis_client, keys, settings.history.max_events,
                          settings.history.retention)
        deliver = DeliverMessage(keys.prefix, written_by_script=False)
        events = [("room", "e", json.dumps({"i": 0}), None)]
        message = deliver.pieces("1", events)
        _, needs_task = history.accept_and_enqueue(
            "1", events, deliver.queue_key, message.head, message.body, message.tail)
        assert needs_task and redis_client.pttl(keys.live_armed) > 0
        # ... and the process is gone: no task. A request meanwhile rides.
        sent_before = _api_metric(cluster, "clarion_api_tasks_enqueued_total")
        cluster.pusher().trigger("room", "e", {"i": 1})
        assert redis_client.llen(keys.live_pending) == 1
        got = [json.loads(f["data"])["i"] for f in client.collect("e", "room", 2, 5)]
        assert got == [0, 1]

        time.sleep(ARMED_MS / 1000)
        cluster.pusher().trigger("room", "e", {"i": 2})
        assert json.loads(client.wait_for("e", "room", 5)["data"])["i"] == 2
        assert _api_metric(cluster, "clarion_api_tasks_enqueued_total") == sent_before + 1
        deadline = time.monotonic() + 5
        while redis_client.llen(keys.live_pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis_client.llen(keys.live_pending) == 0, "the new task did not drain the riders"
        client.assert_nothing(lambda f: f.get("event") == "e", within=1.0)
    finally:
        client.close()
