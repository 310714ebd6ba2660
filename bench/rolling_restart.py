"""A rolling restart at scale: every node drained (SIGTERM) and started again, one by one,
under a stream, with thousands of clients.

    .venv/bin/python -m bench.rolling_restart                    # 2,000 clients, resume on
    .venv/bin/python -m bench.rolling_restart --plain            # the same without resume
    .venv/bin/python -m bench.rolling_restart --nodes 3 --clients 3000 --suffix=-3

It starts a deployment of real processes (tests/_harness/cluster.py: ``--nodes`` node
processes on ports of their own, two worker processes, one API, on a Redis of its own), one
TCP proxy per node in front of them that checks the nodes' ``/ready`` as a load balancer does
(tests/_harness/proxy.py; proxy ``i`` prefers node ``i``, so the clients start spread evenly),
and ``--clients`` WebSocket clients (bench/resume_bench.py's, over ``--procs`` processes) on
``--channels`` public channels, with the resume extension or, with ``--plain``, without.
It publishes ``--rate`` events/s round robin over the channels, each numbered per channel,
and after ``--warmup`` seconds restarts node 0, then node 1 and so on (SIGTERM, wait for the
exit, start again on the same port, wait until it is ready); publishing stops ``--tail``
seconds after the last node is back.

Reported: per node, the drain (SIGTERM to exit), its exit code and what its ``/ready``
answered meanwhile; deliveries expected, missing, duplicated, out of order (counted at every
client from the per-channel numbers); reconnects. Results go to
``bench/results/rolling-restart-<date><suffix>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _harness.cluster import APP_ID, APP_KEY, APP_SECRET, Cluster  # noqa: E402
from _harness.proxy import Proxy  # noqa: E402
from _harness.redis_binary import redis_binary  # noqa: E402

from bench.publisher import App  # noqa: E402
from bench.resume_bench import (  # noqa: E402
    OUTAGE,
    _client_main,
    _publish,
    client_counts,
    client_notes,
    write_table,
)
from bench.subscriber import raise_nofile  # noqa: E402
from bench.targets import Target  # noqa: E402
from bench.wsframes import PUSHER_QUERY  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis  # noqa: E402


@dataclass
class Options:
    clients: int = 2000
    channels: int = 100
    rate: float = 200.0
    nodes: int = 2
    procs: int = 2
    warmup: float = 5.0
    tail: float = 5.0
    drain_spread: float = 1.0
    # The proxies check /ready every 0.1 s: a notice of a few checks and no client is sent
    # back to the draining node (docs/operations.md, "Draining a node").
    drain_notice: float = 0.3
    plain: bool = False
    suffix: str = ""


def _start(opts: Options, tmp: Path) -> tuple[EmbeddedRedis, Cluster, list[Proxy]]:
    redis = EmbeddedRedis(tmp / "redis", binary=redis_binary()).start()
    cluster = Cluster(redis.url, tmp / "cluster", nodes=opts.nodes, workers=1,
                      websocket={"drain_spread": opts.drain_spread,
                                 "drain_notice": opts.drain_notice, "shutdown_grace": 1.0,
                                 "drain_timeout": 10.0})
    cluster.start()
    ports = cluster.node_ports
    proxies = [Proxy(ports[i:] + ports[:i], health_check=True).start()
               for i in range(opts.nodes)]
    return redis, cluster, proxies


def _clients(opts: Options, proxies: list[Proxy]) -> list:
    """The client processes, process ``p`` behind proxy ``p % nodes``; when all subscribed."""
    ctx = multiprocessing.get_context("spawn")
    per = opts.clients // opts.procs
    links = []
    for p in range(opts.procs):
        url = f"ws://127.0.0.1:{proxies[p % len(proxies)].port}/app/{APP_KEY}?{PUSHER_QUERY}"
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_main, daemon=True, args=(
            child, url, p * per, per, opts.channels, not opts.plain))
        proc.start()
        links.append((parent, proc))
    return links


def run(opts: Options, cluster: Cluster, links: list) -> dict:
    subscribed = sum(parent.recv()[1] for parent, _ in links)
    target = Target("clarion", "", cluster.api_url,
                    App(cluster.api_url, APP_ID, APP_KEY, APP_SECRET))
    published: dict[str, int] = {}
    stop = [float("inf")]
    # The publisher in a thread of its own: the nodes are restarted from this (the main)
    # thread, as a node started from a thread gets SIGTERM when that thread ends.
    publishing = threading.Thread(target=lambda: asyncio.run(
        _publish_until(target, opts, stop, published)), daemon=True)
    publishing.start()
    time.sleep(opts.warmup)
    first_sigterm = time.time()
    # Node by node, as an operator's rolling restart does: the next once this one is back.
    restarts, back = [], []
    for i in range(len(cluster.nodes)):
        watch = Resubscribed(links, opts.clients // opts.procs * opts.procs)
        restarts.append(cluster.restart_node(i))
        back.append(watch.result())
    stop[0] = time.monotonic() + opts.tail
    publishing.join()
    time.sleep(3)  # the last events settle
    reports = []
    for parent, _ in links:
        parent.send(("report", published, first_sigterm))
        reports.append(parent.recv()[1])
    return _summary(opts, subscribed, published, reports, restarts, back)


class Resubscribed(threading.Thread):
    """Polls the client processes while the main thread restarts a node: when every client
    was last subscribed again (seconds from now), i.e. the first full count after the last
    short one seen before ``result`` is called (the node drained and back by then)."""

    def __init__(self, links: list, clients: int, timeout: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.links, self.clients, self.timeout = links, clients, timeout
        self.started_at = time.monotonic()
        self.seconds: float | None = None
        self.restarted = threading.Event()
        self.start()

    def _count(self) -> int:
        total = 0
        for parent, _ in self.links:
            parent.send(("count",))
            total += parent.recv()[1]
        return total

    def run(self) -> None:
        short = False
        while time.monotonic() - self.started_at < self.timeout:
            if self._count() < self.clients:
                short = True
            elif short:
                self.seconds, short = time.monotonic() - self.started_at, False
            elif self.restarted.is_set():
                return
            time.sleep(0.05)
        self.seconds = None

    def result(self) -> float | None:
        self.restarted.set()
        self.join(self.timeout)
        return self.seconds


async def _publish_until(target: Target, opts: Options, stop: list[float],
                         published: dict[str, int]) -> None:
    """resume_bench's publisher, a second at a time until ``stop[0]`` (set once the restarts
    are done)."""
    while time.monotonic() < stop[0]:
        await _publish(target, opts.channels, opts.rate, time.monotonic() + 1.0, published)


def _summary(opts: Options, subscribed: int, published: dict[str, int], reports: list[dict],
             restarts: list, back: list[float | None]) -> dict:
    stats = [r["stats"] for r in reports]
    expected = sum(published.get(f"bench-resume-{i % opts.channels}", 0)
                   for i in range(opts.clients // opts.procs * opts.procs))
    missing = sum(r["missing"] for r in reports)
    summary: dict = {
        "mode": "plain pusher protocol" if opts.plain else "resume (docs/resume.md)",
        "clients": opts.clients, "nodes": opts.nodes, "subscribed before the restarts": subscribed,
        "events published": sum(published.values()), "deliveries expected": expected,
        "missing": missing, "missing (%)": round(100 * missing / max(1, expected), 3),
        **client_counts(stats),
    }
    for i, (r, b) in enumerate(zip(restarts, back, strict=True)):
        summary[f"node {i}: drain (SIGTERM to exit, s) / exit code / /ready meanwhile"] = (
            f"{r.drain_seconds:.2f} / {r.exit_code} / {' then '.join(map(str, r.ready_statuses))}")
        summary[f"node {i}: every client subscribed again (s after SIGTERM)"] = (
            "not within 60 s" if b is None else round(b, 2))
    latencies = sorted(x for r in reports for x in r["latencies"])
    if latencies:
        summary[f"events of the {OUTAGE:g} s after the first SIGTERM: latency p50 / p99 / max "
                "(ms)"] = " / ".join(
            str(round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000))
            for q in (0.5, 0.99, 1.0))
    summary.update(client_notes(stats))
    return summary


def _write(summary: dict, opts: Options) -> Path:
    return write_table(
        "rolling-restart", opts.suffix, f"Rolling restart of every node: {summary['mode']}",
        f"python -m bench.rolling_restart --clients {opts.clients} --channels {opts.channels} "
        f"--rate {opts.rate:g} --nodes {opts.nodes} --warmup {opts.warmup:g} --tail "
        f"{opts.tail:g} --drain-spread {opts.drain_spread:g} --drain-notice "
        f"{opts.drain_notice:g}{' --plain' if opts.plain else ''}", summary)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    for name in ("clients", "channels", "nodes", "procs"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("rate", "warmup", "tail", "drain_spread", "drain_notice"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    ap.add_argument("--plain", action="store_true", help="clients without the resume extension")
    ap.add_argument("--suffix", default="", help="appended to the result file name")
    opts = Options(**vars(ap.parse_args(argv)))
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="clarion-rolling-") as tmp:
        redis, cluster, proxies = _start(opts, Path(tmp))
        links = _clients(opts, proxies)
        try:
            summary = run(opts, cluster, links)
        finally:
            _stop(links, proxies, cluster, redis)
    for key, value in summary.items():
        print(f"{key:>40}: {value}")
    print(f"written to {_write(summary, opts)}")


def _stop(links: list, proxies: list[Proxy], cluster: Cluster, redis: EmbeddedRedis) -> None:
    for parent, proc in links:
        try:
            parent.send(("stop",))
        except OSError:
            pass
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    for proxy in proxies:
        proxy.stop()
    cluster.stop()
    redis.stop()


if __name__ == "__main__":
    main()
