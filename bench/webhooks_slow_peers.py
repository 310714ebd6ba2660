"""Webhook latency of a healthy endpoint while other endpoints are slow, by worker pool.

    .venv/bin/python bench/webhooks_slow_peers.py [--seconds 40] [--bad-rate 1]
        [--runs prefork:2,threads:16] [--json out.json]

Starts its own redis-server and, per run, one webhooks worker (``run_worker(queues=
("webhooks",), pool=..., concurrency=...)``). App 1 has one receiver that answers at once;
app 2 has two: one trickles its answer a byte a second, one never answers (the
tests/_harness/slow_peer.py receivers); ``webhooks.timeout`` is 5 s, the retry schedule the
default (first retry after 5 s). For ``--seconds``, app 2 reports ``--bad-rate`` client events
per second (each a delivery to both slow endpoints, then its retry) and app 1 two per second;
each sample is the arrival of an app 1 event at its receiver minus the report call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import redis.asyncio  # noqa: E402
from _harness.slow_peer import SlowPeer  # noqa: E402

from bench.webhooks_bench import Receiver, stop_worker  # noqa: E402
from config.settings import Settings, settings_to_env  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.state.keys import Keys  # noqa: E402
from gateway.webhooks.reporter import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOOD_RATE = 2.0


def settings_for(redis_url: str, prefix: str, good: str, bad: list[str]) -> Settings:
    hook = {"events": ["client_event"]}
    return Settings(
        redis={"url": redis_url, "key_prefix": prefix},
        apps=[{"id": "1", "key": "k1", "secret": "s1", "webhooks": [{"url": good, **hook}]},
              {"id": "2", "key": "k2", "secret": "s2",
               "webhooks": [{"url": u, **hook} for u in bad]}],
        webhooks={"allowed_networks": ["127.0.0.0/8"], "timeout": 5.0},
        log_level="warning",
    )


def start_worker(settings: Settings, pool: str, concurrency: int, log: Path):
    import os
    import subprocess

    import redis as sync_redis

    code = ("from config import load_settings; from workers.main import run_worker; "
            f"run_worker(load_settings(), queues=('webhooks',), concurrency={concurrency}, "
            f"pool={pool!r})")
    proc = subprocess.Popen([sys.executable, "-c", code],
                            env={**os.environ, **settings_to_env(settings)}, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    client = sync_redis.Redis.from_url(settings.redis.url)
    leader = Keys(settings.redis.key_prefix).wh_leader
    deadline = time.monotonic() + 30
    while not client.exists(leader):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("worker did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.05)
    client.close()
    time.sleep(1.0)
    return proc


async def run(redis_url: str, tmp: Path, pool: str, concurrency: int, seconds: float,
              bad_rate: float) -> dict:
    rx = Receiver()
    port = await rx.start()
    peers = [SlowPeer("trickle", interval=1.0), SlowPeer("hang")]
    prefix = f"bench-slow-{pool}{concurrency}:"
    settings = settings_for(redis_url, prefix, f"http://127.0.0.1:{port}/hook",
                            [p.url() for p in peers])
    worker = start_worker(settings, pool, concurrency, tmp / f"{pool}{concurrency}.log")
    client = redis.asyncio.Redis.from_url(redis_url)
    reporter = Reporter(client, Keys(prefix), settings, "bench-node")
    sent: dict[str, float] = {}
    try:
        start = time.monotonic()
        next_good = next_bad = start
        n = 0
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_bad and bad_rate:
                reporter.client_event("2", "noisy", "client-x", str(n), "1.1")
                next_bad += 1 / bad_rate
            if now >= next_good:
                sent[str(n)] = time.time()
                reporter.client_event("1", "calm", "client-x", str(n), "1.1")
                next_good += 1 / GOOD_RATE
            n += 1
            await asyncio.sleep(0.01)
        await reporter.flush(10)
        await rx.wait(lambda: len(rx.events()) >= len(sent), 30)
        arrived = {e["data"]: t for t, body in rx.arrivals
                   for e in json.loads(body)["events"]}
        samples = sorted((arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived)
        held = [e.held for p in peers for e in p.finished()]
        return {
            "pool": pool, "concurrency": concurrency, "seconds": seconds,
            "bad_events_per_second": bad_rate, "good_events": len(sent),
            "good_delivered_within_30s_after": len(samples),
            "good_p50_ms": round(statistics.median(samples), 1) if samples else None,
            "good_p99_ms": round(samples[max(0, int(len(samples) * 0.99) - 1)], 1)
            if samples else None,
            "good_max_ms": round(samples[-1], 1) if samples else None,
            "slow_attempts_finished": len(held),
            "slow_attempt_max_s": round(max(held), 2) if held else None,
        }
    finally:
        await reporter.close()
        await client.aclose()
        stop_worker(worker)
        rx.server.close()
        for p in peers:
            p.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--bad-rate", type=float, default=1.0)
    p.add_argument("--runs", default="prefork:2,threads:16")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = EmbeddedRedis(tmp / "redis").start()
        try:
            for spec in args.runs.split(","):
                pool, concurrency = spec.split(":")
                results.append(await run(server.url, tmp, pool, int(concurrency),
                                         args.seconds, args.bad_rate))
                print(json.dumps(results[-1]), flush=True)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
