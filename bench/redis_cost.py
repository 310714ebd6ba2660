"""What Redis does for Clarion, per connection and per event: commands, bytes in and out, and
memory, read from Redis's own counters (INFO) around three phases:

1. ``--connections`` subscribers open, each on a public channel of its own;
2. they stay idle ``--idle-s`` seconds (what the deployment's own timers cost Redis while
   nothing happens: held connections add nothing);
3. ``--events`` events are published in ``batch_events`` of ``--batch``, one event per
   channel round robin, and delivered to those subscribers.

These are the Redis figures of docs/scaling.md's capacity model. Results go to
bench/results/redis-cost-<date>.md.

    .venv/bin/python -m bench.redis_cost --connections 2000 --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import date
from pathlib import Path

if __package__ in (None, ""):  # `python bench/redis_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from bench.report import unique_path  # noqa: E402
from bench.scenarios import Options, new_channel, open_subscribers  # noqa: E402
from bench.subscriber import raise_nofile  # noqa: E402
from bench.targets import Target, clarion_preset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COUNTERS = ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")


def counters(client: redis.Redis) -> dict[str, float]:
    stats = client.info("stats")
    found = {name: float(stats[name]) for name in COUNTERS}
    found["used_memory"] = float(client.info("memory")["used_memory"])
    found["keys"] = float(client.dbsize())
    for name, calls in client.info("commandstats").items():
        found[name.removeprefix("cmdstat_")] = float(calls["calls"])
    return found


def delta(before: dict[str, float], after: dict[str, float], per: float) -> dict[str, float]:
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / per for k in after}


async def publish(target: Target, channel: str, connections: int, events: int,
                  batch: int) -> None:
    lane = target.publisher().lanes(1)[0]
    names = [f"{channel}-{n}" for n in range(connections)]
    try:
        for first in range(0, events, batch):
            chunk = [names[(first + i) % connections] for i in range(min(batch, events - first))]
            answer = await lane.batch_to(chunk)
            if answer.status != 200:
                raise RuntimeError(f"publish answered {answer.status}: {answer.body[:200]!r}")
    finally:
        lane.http.close()


async def measure(opts: argparse.Namespace, target: Target) -> dict[str, dict[str, float]]:
    client = redis.Redis(port=opts.redis_port)
    await asyncio.sleep(2)
    start = counters(client)
    channel = new_channel("redis-cost")
    pool, _ = await open_subscribers(target, channel, opts.connections, Options(),
                                     signin_by_default=False, own_channels=True)
    try:
        await asyncio.sleep(1)
        opened = counters(client)
        await asyncio.sleep(opts.idle_s)
        idle = counters(client)
        await publish(target, channel, opts.connections, opts.events, opts.batch)
        await asyncio.sleep(2)  # the last deliveries
        published = counters(client)
    finally:
        await pool.close()
    return {
        "per connection opened": delta(start, opened, opts.connections),
        # The processes' own timers (heartbeats, reconcile, webhook and push leaders), not
        # the connections: held connections cost Redis nothing while idle.
        "per second idle, whole deployment": delta(opened, idle, opts.idle_s),
        "per event published": delta(idle, published, opts.events),
    }


def write(opts: argparse.Namespace, phases: dict[str, dict[str, float]]) -> Path:
    names = list(phases)
    rows = ["total_commands_processed", "total_net_input_bytes", "total_net_output_bytes",
            "used_memory", "keys"]
    commands = sorted({k for p in phases.values() for k, v in p.items()
                       if k not in rows and abs(v) >= 0.01},
                      key=lambda k: -max(abs(p.get(k, 0)) for p in phases.values()))
    lines = ["# Redis cost per connection and per event", "",
             f"`.venv/bin/python -m bench.redis_cost --connections {opts.connections} "
             f"--idle-s {opts.idle_s:g} --events {opts.events} --batch {opts.batch}`", "",
             "Each subscriber on a public channel of its own; events in batch_events requests, "
             "one event per channel round robin. Commands by name are Redis's commandstats "
             "calls (a Lua script's inner calls count under their own names and under "
             "evalsha).", "",
             "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in rows + commands:
        lines.append(f"| {key} | " + " | ".join(f"{phases[n].get(key, 0.0):,.2f}"
                                                 for n in names) + " |")
    RESULTS.mkdir(exist_ok=True)
    path = unique_path(RESULTS, f"redis-cost-{date.today().isoformat()}", ".md")
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--ws-port", type=int, default=7423)
    ap.add_argument("--api-port", type=int, default=7424)
    ap.add_argument("--redis-port", type=int, default=7425)
    opts = ap.parse_args(argv)
    raise_nofile()
    target = clarion_preset(opts.ws_port, opts.api_port, 1, opts.redis_port)
    target.start(Path("/tmp") / "clarion-bench-logs" / f"redis-cost-{int(time.time())}")
    try:
        phases = asyncio.run(measure(opts, target))
    finally:
        target.stop()
    print(f"written to {write(opts, phases)}")


if __name__ == "__main__":
    main()
