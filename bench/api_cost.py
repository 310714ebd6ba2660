"""CPU of one publish in the API's own code and in Redis, without an HTTP server or a load
client: the Flask app in this process (its test client), a redis-server of its own.

    .venv/bin/python -m bench.api_cost                    # 8,000 single-event POST /events
    .venv/bin/python -m bench.api_cost --batch            # batch_events of 10 over 1,000 channels
    .venv/bin/python -m bench.api_cost --keys             # each with its own idempotency_key
    .venv/bin/python -m bench.api_cost --task-each        # every request queues its live task
    .venv/bin/python -m bench.api_cost --task-each --producer   # ... with Celery's producer

Prints this process's CPU per request (the API's code plus the test client's, which is the
same for every variant), Redis' (``INFO cpu`` before and after) and the wall time per request
(both, and the round trips between them: requests are sent one at a time). Requests are signed
before the clock starts; 500 warm-up requests are not counted; no worker runs, so the live
queue is emptied every 1,000 requests. On a shared machine, run variants alternately and
compare medians: ``bench.run rest`` measures the whole path, this isolates what a change to
the publish path costs.

``--task-each`` deletes the armed key (gateway/state/riders.py) after each request, so that
every request queues a task of its own, as at a trickle (the DEL is counted in every variant
alike); ``--producer`` names the same Redis as ``broker.url`` under another spelling, so the
API sends the task with Celery's producer after the script (gateway/api/live_sender.py)
instead of the script writing it (the path of a broker other than the state Redis);
``--broker URL`` sends it to that broker (a RabbitMQ: nothing consumes it, purge it after).
``--cluster PORT`` puts the state on a Redis Cluster of 3 masters started on PORT and up (the
app's keys on one of them, the broker on the Redis of the other variants); Redis CPU is then
the sum over the masters.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.webhooks_cluster_cost import start_cluster
from config.settings import Settings
from gateway.api.app import create_app
from gateway.embedded_redis import EmbeddedRedis
from gateway.protocol.signatures import sign_rest_request
from gateway.state.keys import Keys

WARMUP = 500
PREFIX = "cost:"


def _requests(count: int, batch: bool, keys: bool) -> list[tuple[str, dict[str, str], bytes]]:
    out = []
    now = int(time.time())
    for i in range(count):
        if batch:
            path = "/apps/1/batch_events"
            body: dict[str, object] = {"batch": [
                {"name": "e", "channel": f"c{(i * 10 + j) % 1000}", "data": "x" * 20}
                for j in range(10)]}
        else:
            path = "/apps/1/events"
            body = {"name": "e", "channels": ["c"], "data": "x" * 20}
        if keys:
            body["idempotency_key"] = f"key-{i}"
        raw = orjson.dumps(body)
        out.append((path, sign_rest_request("k", "s", "POST", path, {}, raw, now), raw))
    return out


def _redis_cpu(clients: list[redis.Redis]) -> float:
    total = 0.0
    for client in clients:
        info = client.info("cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def _drain(broker: redis.Redis, state: Any, keys: Keys) -> None:
    broker.delete(f"{PREFIX}live")
    state.delete(keys.live_pending_of("1"))
    state.delete(keys.live_armed_of("1"))


def measure(url: str, count: int, batch: bool, keys: bool, task_each: bool = False,
            producer: bool = False, broker_url: str | None = None,
            cluster: list[str] | None = None) -> dict[str, float]:
    if producer and not broker_url:
        broker_url = url.replace("127.0.0.1", "localhost")
    state_url, servers = url, [url]
    if cluster:
        state_url, servers = cluster[0], cluster
        broker_url = broker_url or url
    broker = {"url": broker_url} if broker_url else {}
    settings = Settings(redis={"url": state_url, "key_prefix": PREFIX, "cluster": bool(cluster)},
                        broker=broker, apps=[{"id": "1", "key": "k", "secret": "s"}])
    app = create_app(settings)
    client, r = app.test_client(), redis.Redis.from_url(url)
    state, masters = app.extensions["clarion"].redis, [redis.Redis.from_url(u) for u in servers]
    key_space = Keys.of(settings.redis)
    requests = _requests(count + WARMUP, batch, keys)
    for path, query, raw in requests[:WARMUP]:
        client.post(path, query_string=query, data=raw, content_type="application/json")
    _drain(r, state, key_space)
    cpu, redis_cpu, wall = time.process_time(), _redis_cpu(masters), time.perf_counter()
    for i, (path, query, raw) in enumerate(requests[WARMUP:]):
        response = client.post(path, query_string=query, data=raw,
                               content_type="application/json")
        assert response.status_code == 200, response.data
        if task_each:
            state.delete(key_space.live_armed_of("1"))
        if i % 1000 == 999:
            _drain(r, state, key_space)
    wall = time.perf_counter() - wall
    cpu, redis_cpu = time.process_time() - cpu, _redis_cpu(masters) - redis_cpu
    app.extensions["clarion"].close()
    r.close()
    return {"api_us": round(cpu / count * 1e6, 1), "redis_us": round(redis_cpu / count * 1e6, 1),
            "wall_us": round(wall / count * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--batch", action="store_true", help="batch_events of 10")
    parser.add_argument("--keys", action="store_true", help="an idempotency_key each")
    parser.add_argument("--task-each", action="store_true",
                        help="every request queues a live task (none rides)")
    parser.add_argument("--producer", action="store_true",
                        help="queue it with Celery's producer, not in the accept script")
    parser.add_argument("--broker", metavar="URL",
                        help="broker.url (e.g. a RabbitMQ's amqp:// URL): Celery's producer")
    parser.add_argument("--cluster", type=int, metavar="PORT",
                        help="the state on a Redis Cluster of 3 masters on PORT and up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-cost-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        nodes = []
        try:
            nodes = start_cluster(Path(tmp), args.cluster) if args.cluster else []
            result = measure(server.url, args.requests, args.batch, args.keys,
                             args.task_each, args.producer, args.broker,
                             [f"redis://127.0.0.1:{n.port}" for n in nodes] or None)
        finally:
            for node in [server, *nodes]:
                node.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
