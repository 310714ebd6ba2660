"""Hold many idle connections on several node processes for a long time, and watch whether
memory and file descriptors stay flat: the check behind docs/scaling.md's capacity model.

Starts Clarion (`clarion up` with ``--ws-processes`` node processes on one port), opens
``--connections`` WebSocket subscribers, each on a public channel of its own (a chat app's
private user channels, for the node and Redis alike), holds them ``--hold-s`` seconds with
a ``pusher:ping`` from each every ``--ping-s`` (as pusher-js does on a quiet
connection), and samples every ``--sample-s``: RSS, open files and
CPU of every server process, Redis's memory and keys, and how many subscribers are still
connected. The table goes to bench/results/capacity-<date>.md.

    .venv/bin/python -m bench.capacity_hold --connections 100000 --ws-processes 6

Every process of the server and of the client needs one file descriptor per connection it
holds: ``ulimit -n`` (the hard limit) bounds connections per process. The client spreads its
subscribers over loopback source addresses (127.0.0.1-8) because one source address has only
about 28,000 ephemeral ports towards one server port.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

if __package__ in (None, ""):  # `python bench/capacity_hold.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import redis  # noqa: E402

from bench.procstats import process_label  # noqa: E402
from bench.report import unique_path  # noqa: E402
from bench.scenarios import Options, new_channel, open_subscribers  # noqa: E402
from bench.subscriber import raise_nofile  # noqa: E402
from bench.targets import clarion_preset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Subscribers per client process: below the per-process descriptor limit, with room to spare.
PER_CLIENT = 15_000


@dataclass
class Reading:
    """One sample: per server process (label[pid]) RSS MB, open files and CPU seconds."""

    at_s: float
    connected: int
    rss_mb: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    redis_mb: float = 0.0
    redis_keys: int = 0


def read_server(processes: list[psutil.Process], redis_client: redis.Redis, at_s: float,
                connected: int) -> Reading:
    reading = Reading(at_s, connected)
    for proc in processes:
        try:
            with proc.oneshot():
                name = f"{process_label(proc)}[{proc.pid}]"
                reading.rss_mb[name] = proc.memory_info().rss / 2**20
                reading.fds[name] = proc.num_fds()
                times = proc.cpu_times()
                reading.cpu_s[name] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    info = redis_client.info("memory")
    reading.redis_mb = info["used_memory"] / 2**20
    reading.redis_keys = int(redis_client.dbsize())
    return reading


async def hold(opts: argparse.Namespace, target, redis_port: int) -> tuple[list[Reading], dict]:
    root = psutil.Process(target.pids[0])
    client = redis.Redis(port=redis_port)
    bench_opts = Options(client_procs=opts.client_procs or math.ceil(opts.connections / PER_CLIENT))
    started = time.monotonic()
    pool, opened_per_s = await open_subscribers(target, new_channel("cap"), opts.connections,
                                                bench_opts, signin_by_default=False,
                                                own_channels=True, ping_s=opts.ping_s)
    readings: list[Reading] = []
    client_processes = pool.size
    try:
        connect_s = time.monotonic() - started
        t0 = time.monotonic()
        while True:
            processes = [root, *root.children(recursive=True)]
            connected, _ = await pool.count()
            readings.append(read_server(processes, client, time.monotonic() - t0, connected))
            if time.monotonic() - t0 >= opts.hold_s:
                break
            await asyncio.sleep(min(opts.sample_s, opts.hold_s - (time.monotonic() - t0)))
    finally:
        await pool.close()
    return readings, {"connect_s": connect_s, "opened_per_s": opened_per_s,
                      "client_processes": client_processes}


def is_node(name: str) -> bool:
    """A WebSocket node process, by its label (``... gateway.cli ws ...[pid]``)."""
    return " ws" in name.split("[")[0]


def table(readings: list[Reading]) -> list[str]:
    """Per process: RSS and open files at the first and last sample, CPU over the hold."""
    first, last = readings[0], readings[-1]
    span = max(last.at_s - first.at_s, 1e-9)
    lines = ["| process | RSS MB first | RSS MB last | RSS growth | open files first | "
             "open files last | CPU % over the hold |", "|---|---|---|---|---|---|---|"]
    for name in sorted(last.rss_mb, key=lambda n: (-last.fds.get(n, 0), n)):
        before = first.rss_mb.get(name, float("nan"))
        grow = (last.rss_mb[name] - before) / before * 100 if before else float("nan")
        cpu = (last.cpu_s[name] - first.cpu_s.get(name, 0.0)) / span * 100
        lines.append(f"| {name} | {before:.1f} | {last.rss_mb[name]:.1f} | {grow:+.1f} % | "
                     f"{first.fds.get(name, 0):,} | {last.fds[name]:,} | {cpu:.1f} |")
    return lines


def timeline(readings: list[Reading]) -> list[str]:
    lines = ["| seconds | connected | server RSS MB (all) | open files (all) | Redis MB | "
             "Redis keys |", "|---|---|---|---|---|---|"]
    for r in readings:
        lines.append(f"| {r.at_s:.0f} | {r.connected:,} | {sum(r.rss_mb.values()):.0f} | "
                     f"{sum(r.fds.values()):,} | {r.redis_mb:.1f} | {r.redis_keys:,} |")
    return lines


def write(opts: argparse.Namespace, readings: list[Reading], meta: dict) -> Path:
    first, last = readings[0], readings[-1]
    nodes = [name for name in last.rss_mb if is_node(name)]
    node_rss = sum(last.rss_mb[name] for name in nodes)
    held = max(last.connected, 1)
    lines = [
        "# Capacity: idle connections held on several node processes", "",
        f"`.venv/bin/python -m bench.capacity_hold --connections {opts.connections} "
        f"--ws-processes {opts.ws_processes} --hold-s {opts.hold_s:g}`", "",
        f"Connections opened: {opts.connections:,} in {meta['connect_s']:.1f} s "
        f"({meta['opened_per_s']:,.0f}/s) by {meta['client_processes']} client processes; "
        f"still connected after {last.at_s:.0f} s: {last.connected:,}. "
        f"Descriptor limit per process: {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,}. "
        f"Node processes: {len(nodes)}, {node_rss:.0f} MB together at the end "
        f"({node_rss * 1024 / held:.2f} KB per connection, interpreter included); "
        f"Redis {last.redis_mb:.1f} MB ({last.redis_mb * 1024 / held:.2f} "
        f"KB per connection), {last.redis_keys:,} keys. Load average at the end: "
        f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())}.", "",
        "## Per process", "", *table(readings), "",
        f"RSS growth compares the first sample (all connections open, at {first.at_s:.0f} s) "
        "with the last.", "", "## Over time", "", *timeline(readings), "",
    ]
    RESULTS.mkdir(exist_ok=True)
    path = unique_path(RESULTS, f"capacity-{date.today().isoformat()}", ".md")
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--ws-processes", type=int, default=6)
    ap.add_argument("--hold-s", type=float, default=600.0)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--ping-s", type=float, default=120.0,
                    help="pusher:ping every this many seconds (pusher-js: the server's "
                    "activity_timeout, 120 s, on a quiet connection)")
    ap.add_argument("--client-procs", type=int, default=None,
                    help=f"default: one per {PER_CLIENT:,} connections")
    ap.add_argument("--ws-port", type=int, default=7420)
    ap.add_argument("--api-port", type=int, default=7421)
    ap.add_argument("--redis-port", type=int, default=7422)
    opts = ap.parse_args(argv)
    raise_nofile()
    target = clarion_preset(opts.ws_port, opts.api_port, opts.ws_processes, opts.redis_port)
    target.start(Path("/tmp") / "clarion-bench-logs" / f"capacity-{int(time.time())}")
    try:
        readings, meta = asyncio.run(hold(opts, target, opts.redis_port))
    finally:
        target.stop()
    print("\n".join(table(readings)))
    print(f"written to {write(opts, readings, meta)}")


if __name__ == "__main__":
    main()
