"""pusher-js's HTTP transports next to WebSockets, on one Clarion deployment in one run.

    .venv/bin/python -m bench.xhr_bench [--clients 1000] [--events 200] [--rate 50]
                                        [--seconds 10] [--idle 30]

1. Memory: the WebSocket node's RSS before and after ``--clients`` WebSocket subscribers, then
   after as many xhr_streaming subscribers (each on a public channel of its group).
2. Fan-out, per group: ``--events`` events in batch_events of 10, 4 requests in flight;
   deliveries/s = events x clients / (first publish -> last delivery), node CPU per delivery.
3. Latency, per group: ``--rate`` single events/s for ``--seconds``; publish -> receive.
4. Polling: the streams and sockets closed, ``--clients`` xhr_polling clients; idle for
   ``--idle`` s (polls/s and node CPU), then events at ``--rate``/s (polls/s the node answers,
   node CPU, latency).

Clients run in a process of their own (bench/xhr_clients.py); server and clients share the
machine's CPUs: read each figure with its CPU rows. Results: bench/results/<date>-xhr.md/json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from datetime import date
from pathlib import Path

import psutil

from bench.procstats import pids_listening_on
from bench.publisher import Lane, Publisher
from bench.targets import clarion_preset
from bench.xhr_clients import client_process
from gateway.embedded_redis import free_port

RESULTS = Path(__file__).parent / "results"


class Clients:
    def __init__(self, port: int, key: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=client_process, args=(child, "127.0.0.1", port, key),
                                daemon=True)
        self.proc.start()

    def ask(self, op: str, **args) -> dict:
        self.conn.send((op, args))
        return self.conn.recv()


class Node:
    """The WebSocket node process: RSS and CPU."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while not (pids := pids_listening_on(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.proc = psutil.Process(pids[0])

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def cpu(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] / 1e6


async def fanout(publisher: Publisher, channel: str, events: int) -> float:
    """Publish ``events`` in batches of 10 over 4 lanes; the first publish's time."""
    lanes = publisher.lanes(4)
    t0 = time.monotonic_ns()
    per_lane = events // len(lanes)

    async def run(lane: Lane) -> None:
        for _ in range(per_lane // 10):
            answer = await lane.batch(channel, 10)
            if answer.status != 200:
                raise RuntimeError(f"publish failed: {answer.status} {answer.body[:200]!r}")

    await asyncio.gather(*(run(lane) for lane in lanes))
    for lane in lanes:
        lane.http.close()
    return t0


async def steady(publisher: Publisher, channel: str, rate: float, seconds: float) -> None:
    """Single events at a fixed schedule (each event's data carries its send time)."""
    lane = publisher.lanes(1)[0]
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        answer = await lane.event(channel)
        if answer.status != 200:
            raise RuntimeError(f"publish failed: {answer.status} {answer.body[:200]!r}")
    lane.http.close()


def wait_deliveries(clients: Clients, expected: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = clients.ask("stats")
        if stats["deliveries"] >= expected or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def run_fanout(clients, node, publisher, channel, count, events) -> dict:
    clients.ask("arm")
    cpu0 = node.cpu()
    t0 = asyncio.run(fanout(publisher, channel, events))
    stats = wait_deliveries(clients, events * count)
    cpu = node.cpu() - cpu0
    got = stats["deliveries"]
    seconds = (stats["last_ns"] - t0) / 1e9
    return {"deliveries": got, "expected": events * count, "seconds": round(seconds, 3),
            "deliveries_per_s": round(got / seconds), "node_cpu_us_per_delivery":
            round(cpu / max(got, 1) * 1e6, 3)}


def run_latency(clients, node, publisher, channel, count, rate, seconds) -> dict:
    clients.ask("arm")
    cpu0 = node.cpu()
    asyncio.run(steady(publisher, channel, rate, seconds))
    stats = wait_deliveries(clients, int(rate * seconds) * count, 10)
    lat = stats["latencies"]
    return {"deliveries": len(lat), "expected": int(rate * seconds) * count,
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(pct(lat, 100), 2), "node_cpu_pct":
            round((node.cpu() - cpu0) / seconds * 100, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=float, default=30)
    opts = parser.parse_args()
    ws_port, api_port = free_port(), free_port()
    target = clarion_preset(ws_port, api_port)
    log_dir = Path(tempfile.mkdtemp(prefix="clarion-xhr-bench-"))
    target.start(log_dir)
    try:
        result = run(opts, target, ws_port)
    finally:
        target.stop()
    write(result, opts)


def run(opts, target, ws_port: int) -> dict:
    node = Node(ws_port)
    clients = Clients(ws_port, target.app.key)
    publisher = Publisher(target.app)
    n = opts.clients
    result: dict = {"clients": n, "machine": f"{psutil.cpu_count()} CPUs"}
    time.sleep(2)
    rss0 = node.rss()
    clients.ask("open", kind="ws", count=n, channel="xb-ws")
    time.sleep(2)
    rss1 = node.rss()
    clients.ask("open", kind="xhr_streaming", count=n, channel="xb-stream")
    time.sleep(2)
    rss2 = node.rss()
    result["memory_kb_per_connection"] = {"ws": round((rss1 - rss0) / n / 1024, 2),
                                          "xhr_streaming": round((rss2 - rss1) / n / 1024, 2)}
    print("memory", result["memory_kb_per_connection"])
    for group, channel in (("ws", "xb-ws"), ("xhr_streaming", "xb-stream")):
        run_fanout(clients, node, publisher, channel, n, 40)  # warm-up
        result[f"fanout_{group}"] = run_fanout(clients, node, publisher, channel, n,
                                               opts.events)
        print("fanout", group, result[f"fanout_{group}"])
        result[f"latency_{group}"] = run_latency(clients, node, publisher, channel, n,
                                                 opts.rate, opts.seconds)
        print("latency", group, result[f"latency_{group}"])
    for kind in ("ws", "xhr_streaming"):
        clients.ask("close", kind=kind)
    time.sleep(12)  # closed sessions forgotten (http_session_timeout)
    clients.ask("open", kind="xhr_polling", count=n, channel="xb-poll")
    clients.ask("arm")
    cpu0 = node.cpu()
    time.sleep(opts.idle)
    stats = clients.ask("stats")
    result["polling_idle"] = {"seconds": opts.idle, "polls_per_s":
                              round(stats["polls"] / opts.idle, 1), "node_cpu_pct":
                              round((node.cpu() - cpu0) / opts.idle * 100, 2)}
    print("polling idle", result["polling_idle"])
    clients.ask("arm")
    cpu0 = node.cpu()
    asyncio.run(steady(publisher, "xb-poll", opts.rate, opts.seconds))
    stats = wait_deliveries(clients, int(opts.rate * opts.seconds) * n, 10)
    lat = stats["latencies"]
    result["polling_busy"] = {"events_per_s": opts.rate, "polls_per_s":
                              round(stats["polls"] / opts.seconds), "deliveries": len(lat),
                              "expected": int(opts.rate * opts.seconds) * n,
                              "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
                              "node_cpu_pct": round((node.cpu() - cpu0) / opts.seconds * 100, 1)}
    print("polling busy", result["polling_busy"])
    result["client_cpu_s"] = round(clients.ask("stats")["cpu"], 1)
    clients.ask("quit")
    return result


def write(result: dict, opts) -> None:
    stem = RESULTS / f"{date.today().isoformat()}-xhr"
    i = 1
    while stem.with_suffix(".json").exists():
        i += 1
        stem = RESULTS / f"{date.today().isoformat()}-xhr-{i}"
    stem.with_suffix(".json").write_text(json.dumps({"options": vars(opts), **result}, indent=2))
    m, n = result["memory_kb_per_connection"], result["clients"]
    fw, fs = result["fanout_ws"], result["fanout_xhr_streaming"]
    lw, ls = result["latency_ws"], result["latency_xhr_streaming"]
    pi, pb = result["polling_idle"], result["polling_busy"]
    lines = [
        f"# HTTP fallback vs WebSocket, {n:,} clients each, one run ({date.today()})", "",
        "`.venv/bin/python -m bench.xhr_bench " + " ".join(
            f"--{k} {v}" for k, v in vars(opts).items()) + "`", "",
        "| figure | WebSocket | xhr_streaming |", "|---|---|---|",
        f"| memory KB per connection (node RSS) | {m['ws']} | {m['xhr_streaming']} |",
        f"| fan-out deliveries/s ({opts.events} events x {n:,}) | {fw['deliveries_per_s']:,} "
        f"| {fs['deliveries_per_s']:,} |",
        f"| (deliveries / expected) | {fw['deliveries']:,} / {fw['expected']:,} "
        f"| {fs['deliveries']:,} / {fs['expected']:,} |",
        f"| node CPU us per delivery | {fw['node_cpu_us_per_delivery']} "
        f"| {fs['node_cpu_us_per_delivery']} |",
        f"| latency p50 / p99 ms ({opts.rate:g} ev/s for {opts.seconds:g} s) "
        f"| {lw['p50_ms']} / {lw['p99_ms']} | {ls['p50_ms']} / {ls['p99_ms']} |",
        f"| (deliveries / expected) | {lw['deliveries']:,} / {lw['expected']:,} "
        f"| {ls['deliveries']:,} / {ls['expected']:,} |",
        f"| node CPU during the latency run | {lw['node_cpu_pct']} % | {ls['node_cpu_pct']} % |",
        "", f"## xhr_polling, {n:,} clients", "",
        f"| figure | idle | events at {opts.rate:g}/s |", "|---|---|---|",
        f"| poll requests/s answered | {pi['polls_per_s']} | {pb['polls_per_s']:,} |",
        f"| node CPU | {pi['node_cpu_pct']} % | {pb['node_cpu_pct']} % |",
        f"| latency p50 / p99 ms | - | {pb['p50_ms']} / {pb['p99_ms']} |",
        f"| deliveries / expected | - | {pb['deliveries']:,} / {pb['expected']:,} |",
        "", f"Client process CPU over the run: {result['client_cpu_s']} s "
        f"({result['machine']}, shared by node, API, worker, Redis and the clients).", "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
