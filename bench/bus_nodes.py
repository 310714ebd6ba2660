"""Server CPU per event as node processes are added, each channel's subscribers on one node.

    .venv/bin/python -m bench.bus_nodes                          # 1, 2 and 4 nodes
    .venv/bin/python -m bench.bus_nodes --nodes 1 --nodes 4 --channels 400 --per-channel 20

With the channel-routed bus (docs/architecture.md, "The bus") a node receives only the events
of channels it has subscribers on, so adding nodes must not add work per event; with one bus
every node received and parsed every event. For each node count N this starts a deployment of
real processes (tests/_harness/cluster.py: N ``clarion ws`` processes on ports of their own,
one set of workers, one API, a Redis of its own), opens ``--channels`` subscribers, each alone
on its channel, channel n's on node n % N (one client process per node, bench/clients.py),
publishes ``--per-channel`` events to every channel in ``batch_events`` of ``--batch`` walking
the channels round robin (bench/scenarios.py), waits for every delivery and reads the CPU time
of every process over that window (bench/procstats.py).

Reported per N: server CPU per event (every process), split into nodes (all of them), the
workers, the API and Redis; the nodes' figure less what they spend idle (timers: heartbeats,
liveness, reconcile; read over ``IDLE_S`` before publishing) in as long as the window; the
busiest node's share; missing deliveries; machine load. Results go to
``bench/results/bus-nodes-<date><suffix>.md``. Ports: ``--port`` (7443) for Redis, the next
one for the API, then one per node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _harness.cluster import APP_ID, APP_KEY, APP_SECRET, Cluster  # noqa: E402
from _harness.redis_binary import redis_binary  # noqa: E402

from bench.clients import ClientPool  # noqa: E402
from bench.procstats import MachineCpu, ServerProcesses, cpu_delta  # noqa: E402
from bench.publisher import App, Publisher  # noqa: E402
from bench.scenarios import (  # noqa: E402
    close_lanes,
    new_channel,
    publish_round_robin,
    warm_up_channels,
)
from bench.wsframes import Endpoint  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Seconds of the nodes' idle CPU read before publishing (heartbeats, liveness, reconcile).
IDLE_S = 3.0


@dataclass
class Options:
    nodes: list[int] = field(default_factory=lambda: [1, 2, 4])
    channels: int = 400
    per_channel: int = 20
    batch: int = 10
    inflight: int = 4
    warmup: int = 40
    port: int = 7443
    suffix: str = ""


@dataclass
class Run:
    nodes: int
    events: int
    received: int
    missing: int
    seconds: float
    cpu_s: dict[str, float]         # nodes, worker, api, redis
    node_cpu_s: list[float]         # each node
    node_idle_cpu_s: float          # what the nodes spend idle (timers) in as long
    machine_busy_pct: float
    load: float

    def per_event_us(self, part: str) -> float:
        return 1e6 * self.cpu_s[part] / max(1, self.received)


def _groups(redis: EmbeddedRedis, cluster: Cluster) -> dict[str, ServerProcesses]:
    assert redis.process is not None and cluster.api is not None
    return {
        "nodes": ServerProcesses([n.pid for n in cluster.nodes]),
        "worker": ServerProcesses([w.pid for w in cluster.workers]),
        "api": ServerProcesses([cluster.api.pid]),
        "redis": ServerProcesses([redis.process.pid]),
    }


async def _measure(opts: Options, cluster: Cluster, groups: dict[str, ServerProcesses]) -> Run:
    n = len(cluster.nodes)
    pools = [ClientPool(1) for _ in range(n)]
    names: list[str] = []
    app = App(cluster.api_url, APP_ID, APP_KEY, APP_SECRET)
    lanes = Publisher(app).lanes(opts.inflight)
    try:
        for i, pool in enumerate(pools):
            count = len(range(i, opts.channels, n))  # channel j's subscriber on node j % n
            prefix = new_channel(f"node{i}")
            endpoint = Endpoint.for_app(f"ws://127.0.0.1:{cluster.node_ports[i]}", APP_KEY)
            opened = await pool.open(endpoint, prefix, count, own_channels=True)
            if opened.failed:
                raise RuntimeError(f"{opened.failed} subscribers failed: {opened.failures}")
            names += [f"{prefix}-{k}" for k in range(count)]
        await warm_up_channels(lanes[0], names, opts.warmup, opts.batch)
        for pool in pools:
            await pool.arm(opts.per_channel, read_pause_ms=50)
        idle_before = groups["nodes"].sample()
        await asyncio.sleep(IDLE_S)
        idle_rate = cpu_delta(idle_before, groups["nodes"].sample()) / IDLE_S
        before = {k: g.sample() for k, g in groups.items()}
        per_node = [ServerProcesses([c.pid]) for c in cluster.nodes]
        node_before = [p.sample() for p in per_node]
        machine = MachineCpu()
        t0 = time.monotonic()
        await publish_round_robin(lanes, names, opts.per_channel, opts.batch, 0)
        got = await asyncio.gather(*(pool.wait(5.0, 120.0) for pool in pools))
        seconds = time.monotonic() - t0
        cpu = {k: cpu_delta(before[k], g.sample()) for k, g in groups.items()}
        node_cpu = [cpu_delta(b, p.sample()) for b, p in zip(node_before, per_node, strict=True)]
        return Run(nodes=n, events=opts.channels * opts.per_channel,
                   received=sum(d.received for d in got), missing=sum(d.missing for d in got),
                   seconds=seconds, cpu_s=cpu, node_cpu_s=node_cpu,
                   node_idle_cpu_s=idle_rate * seconds,
                   machine_busy_pct=machine.busy_pct(), load=os.getloadavg()[0])
    finally:
        close_lanes(lanes)
        for pool in pools:
            await pool.close()


def run_one(opts: Options, nodes: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="clarion-bus-nodes-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", port=opts.port, binary=redis_binary())
        redis.start()
        cluster = Cluster(redis.url, Path(tmp) / "cluster", nodes=nodes, workers=1,
                          api={"port": opts.port + 1})
        cluster.node_ports = [opts.port + 2 + i for i in range(nodes)]
        try:
            cluster.start()
            return asyncio.run(_measure(opts, cluster, _groups(redis, cluster)))
        finally:
            cluster.stop()
            redis.stop()


def table(runs: list[Run]) -> str:
    head = "| | " + " | ".join(f"{r.nodes} node{'s' if r.nodes > 1 else ''}" for r in runs)
    rows = [head + " |", "|---|" + "---|" * len(runs)]

    def row(label: str, values: list[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(values) + " |")

    row("events delivered (missing)", [f"{r.received} ({r.missing})" for r in runs])
    row("server CPU us/event, all processes",
        [f"{sum(r.cpu_s.values()) * 1e6 / max(1, r.received):.0f}" for r in runs])
    for part in ("nodes", "worker", "api", "redis"):
        row(f"- {part}", [f"{r.per_event_us(part):.1f}" for r in runs])
    row("- nodes, less their idle CPU over the window",
        [f"{(r.cpu_s['nodes'] - r.node_idle_cpu_s) * 1e6 / max(1, r.received):.1f}"
         for r in runs])
    row("busiest node's share of node CPU",
        [f"{100 * max(r.node_cpu_s) / max(1e-9, sum(r.node_cpu_s)):.0f} %" for r in runs])
    row("first publish -> last delivery (s)", [f"{r.seconds:.1f}" for r in runs])
    row("machine busy % / load average (1 min)",
        [f"{r.machine_busy_pct:.0f} / {r.load:.1f}" for r in runs])
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, action="append")
    p.add_argument("--channels", type=int, default=Options.channels)
    p.add_argument("--per-channel", type=int, default=Options.per_channel)
    p.add_argument("--batch", type=int, default=Options.batch)
    p.add_argument("--port", type=int, default=Options.port)
    p.add_argument("--suffix", default="")
    a = p.parse_args(argv)
    opts = Options(nodes=a.nodes or [1, 2, 4], channels=a.channels, per_channel=a.per_channel,
                   batch=a.batch, port=a.port, suffix=a.suffix)
    runs = []
    for n in opts.nodes:
        print(f"{n} node(s)...", flush=True)
        runs.append(run_one(opts, n))
        print(table(runs[-1:]), flush=True)
    text = (f"# Server CPU per event by node count{opts.suffix}\n\n"
            f"{opts.channels} channels x 1 subscriber, channel n's on node n % N; "
            f"{opts.per_channel} events per channel in batch_events of {opts.batch} "
            f"({opts.inflight} in flight).\n\n{table(runs)}\n")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bus-nodes-{time.strftime('%Y-%m-%d')}{opts.suffix}.md"
    path.write_text(text)
    print(text)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
