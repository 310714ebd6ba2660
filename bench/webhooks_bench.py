"""Webhook delivery benchmark: deliveries per second to a local receiver that answers at
once, and the time from a channel being vacated (the Reporter call) to its webhook arriving.

    .venv/bin/python bench/webhooks_bench.py [--deliveries 3000] [--concurrency 8]
                                             [--vacates 200] [--json out.json]

Starts its own redis-server (gateway/embedded_redis.py), an asyncio HTTP receiver on
127.0.0.1 and one webhooks worker (``run_worker(queues=("webhooks",))``) per run.

- throughput: ``--deliveries`` client events reported in one burst with ``batch_size = 1``
  (one POST per event), then the same with the default batching (20 events / 250 ms);
  rate = events or POSTs received / (last arrival - first arrival).
- vacate latency: ``--vacates`` channels are occupied, then vacated one by one at random
  20-60 ms intervals with the default settings (debounce 3 s, batch window 0.25 s); each
  sample is the arrival of the request carrying that channel's channel_vacated minus the
  ``channel_subscription_changed(-1)`` call, minus the debounce. Then again without
  batching (``batch_window = 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import redis.asyncio  # noqa: E402

from config.settings import Settings, settings_to_env  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.state.keys import Keys  # noqa: E402
from gateway.webhooks.reporter import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = {"id": "1", "key": "bench-key", "secret": "bench-secret"}


class Receiver:
    """Minimal HTTP/1.1 server: reads one request per connection, answers 200 at once."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self.server: asyncio.Server | None = None
        self.event = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            self.arrivals.append((time.time(), body))
            self.event.set()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), 0.05)
            except TimeoutError:
                pass
        return True

    def events(self) -> list[dict]:
        return [e for _t, b in self.arrivals for e in orjson.loads(b)["events"]]


def settings_for(redis_url: str, prefix: str, url: str, events: list[str], concurrency: int,
                 **wh: object) -> Settings:
    return Settings(
        redis={"url": redis_url, "key_prefix": prefix},
        apps=[{**APP, "webhooks": [{"url": url, "events": events}]}],
        worker={"concurrency": concurrency},
        webhooks={"allowed_networks": ["127.0.0.0/8"], **wh},
        log_level="warning",
    )


def start_worker(settings: Settings, concurrency: int, log: Path) -> subprocess.Popen:
    code = ("from config import load_settings; from workers.main import run_worker; "
            f"run_worker(load_settings(), queues=('webhooks',), concurrency={concurrency})")
    proc = subprocess.Popen([sys.executable, "-c", code],
                            env={**os.environ, **settings_to_env(settings)}, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Ready once a pool process holds the webhooks lead (log_level is "warning": no
    # per-task log lines to slow the run down, and no "ready." line either).
    import redis as sync_redis

    client = sync_redis.Redis.from_url(settings.redis.url)
    leader = Keys(settings.redis.key_prefix).wh_leader
    deadline = time.monotonic() + 30
    while not client.exists(leader):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("worker did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.05)
    client.close()
    time.sleep(1.0)  # the other pool processes finish starting
    return proc


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def throughput(redis_url: str, tmp: Path, n: int, concurrency: int,
                     batch_size: int) -> dict:
    rx = Receiver()
    port = await rx.start()
    prefix = f"bench-tp{batch_size}:"
    settings = settings_for(redis_url, prefix, f"http://127.0.0.1:{port}/hook",
                            ["client_event"], concurrency, batch_size=batch_size)
    worker = start_worker(settings, concurrency, tmp / f"tp{batch_size}.log")
    client = redis.asyncio.Redis.from_url(redis_url)
    reporter = Reporter(client, Keys(prefix), settings, "bench-node")
    try:
        t0 = time.time()
        for i in range(n):
            reporter.client_event("1", f"ch-{i % 50}", "client-x", str(i), "1.1")
        await reporter.flush(60)
        reported = time.time()
        ok = await rx.wait(lambda: len(rx.events()) >= n, 300)
        first, last = rx.arrivals[0][0], rx.arrivals[-1][0]
        span = max(last - first, 1e-6)
        return {
            "batch_size": batch_size, "concurrency": concurrency, "events": n,
            "complete": ok, "posts": len(rx.arrivals),
            "report_seconds": round(reported - t0, 3),
            "posts_per_second": round(len(rx.arrivals) / span, 1),
            "events_per_second": round(len(rx.events()) / span, 1),
            "first_arrival_after_s": round(first - t0, 3),
        }
    finally:
        await reporter.close()
        await client.aclose()
        stop_worker(worker)
        rx.server.close()


async def vacate_latency(redis_url: str, tmp: Path, channels: int, concurrency: int,
                         **wh: object) -> dict:
    """Occupy ``channels`` channels, then vacate them one by one at random 20-60 ms
    intervals; each latency is (arrival of the request carrying that channel's
    channel_vacated) - (the -1 call) - debounce."""
    import random

    rx = Receiver()
    port = await rx.start()
    prefix = f"bench-vac{len(wh)}:"
    settings = settings_for(redis_url, prefix, f"http://127.0.0.1:{port}/hook",
                            ["channel_vacated"], concurrency, **wh)
    debounce = settings.webhooks.debounce
    worker = start_worker(settings, concurrency, tmp / f"vac{len(wh)}.log")
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = Keys(prefix)
    await client.zadd(keys.nodes, {"bench-node": int(time.time() * 1000) + 3_600_000})
    reporter = Reporter(client, keys, settings, "bench-node")
    rng = random.Random(7)
    try:
        for i in range(channels):
            reporter.channel_subscription_changed("1", f"room-{i}", +1)
        await reporter.flush(30)
        await asyncio.sleep(0.5)
        started: dict[str, float] = {}
        for i in range(channels):
            ch = f"room-{i}"
            started[ch] = time.time()
            reporter.channel_subscription_changed("1", ch, -1)
            await asyncio.sleep(rng.uniform(0.02, 0.06))
        if not await rx.wait(lambda: len(rx.events()) >= channels, debounce + 30):
            raise RuntimeError(f"only {len(rx.events())} of {channels} vacates arrived")
        arrived = {}
        for t, body in rx.arrivals:
            for e in orjson.loads(body)["events"]:
                arrived.setdefault(e["channel"], t)
        samples = sorted((arrived[ch] - t0 - debounce) * 1000 for ch, t0 in started.items())
        return {
            "channels": channels, "posts": len(rx.arrivals),
            "settings": {"debounce": debounce, "tick": settings.webhooks.tick,
                         "batch_window": settings.webhooks.batch_window},
            "median_ms": round(statistics.median(samples), 1),
            "p99_ms": round(samples[max(0, int(len(samples) * 0.99) - 1)], 1),
            "min_ms": round(samples[0], 1), "max_ms": round(samples[-1], 1),
        }
    finally:
        await reporter.close()
        await client.aclose()
        stop_worker(worker)
        rx.server.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deliveries", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--vacates", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = EmbeddedRedis(tmp / "redis").start()
        try:
            results = {
                "throughput_unbatched": await throughput(server.url, tmp, args.deliveries,
                                                         args.concurrency, 1),
                "throughput_batched": await throughput(server.url, tmp, args.deliveries,
                                                       args.concurrency, 20),
                "vacate_latency_defaults": await vacate_latency(server.url, tmp, args.vacates,
                                                                args.concurrency),
                "vacate_latency_unbatched": await vacate_latency(
                    server.url, tmp, args.vacates, args.concurrency, batch_window=0.0),
            }
        finally:
            server.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
