"""What webhooks cost on a Redis Cluster next to one Redis: Redis commands and client CPU

1. per second of an idle webhooks leader (default tick, 0.2 s), for ``--apps`` apps with
   webhooks (on a cluster the leader looks at every app's stream, due and retry sets every
   5 s, and at the apps woken in between);
2. per subscription change written by a node's Reporter (on a cluster the node's record of its
   channels is written apart from the script: two more round trips per batch, not per change).

Redis counters are INFO ``total_commands_processed`` summed over the masters (minus the INFO
calls themselves); CPU is this process's (``time.process_time``). The servers are started
here, on ``--port`` and up (a cluster node's bus port is its port + 100). Results go to
bench/results/webhooks-cluster-cost-<date>.md.

    .venv/bin/python -m bench.webhooks_cluster_cost --apps 1 10 100 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

if __package__ in (None, ""):  # `python bench/webhooks_cluster_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from bench.report import unique_path  # noqa: E402
from config.settings import Settings  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.state.keys import Keys  # noqa: E402
from gateway.state.redis_client import async_client, sync_client  # noqa: E402
from gateway.webhooks.reporter import Reporter  # noqa: E402
from workers.webhooks.leader import Leader  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class _Node(EmbeddedRedis):
    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.port + 100),
            "--cluster-config-file",
            str(self.data_dir / "nodes.conf"),
        ]


def start_cluster(tmp: Path, port: int) -> list[_Node]:
    nodes = [_Node(tmp / f"n{i}", port + i).start() for i in range(3)]
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *[f"127.0.0.1:{n.port}" for n in nodes],
            "--cluster-yes",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    for n in nodes:
        c = redis.Redis(port=n.port)
        while c.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            time.sleep(0.1)
        c.close()
    return nodes


def commands(ports: list[int]) -> int:
    total = 0
    for port in ports:
        c = redis.Redis(port=port)
        total += int(c.info("stats")["total_commands_processed"])
        c.close()
    return total


def settings_for(url: str, cluster: bool, apps: int, broker: str) -> Settings:
    hooks = [{"url": "http://127.0.0.1:9/", "events": ["channel_occupied", "channel_vacated"]}]
    return Settings(
        redis={"url": url, "key_prefix": f"b{time.monotonic_ns()}:", "cluster": cluster},
        broker={"url": broker},
        apps=[
            {"id": str(i), "key": f"k{i}", "secret": "s", "webhooks": hooks}
            for i in range(1, apps + 1)
        ],
        webhooks={},
    )


def leader_cost(settings: Settings, ports: list[int], seconds: float) -> tuple[float, float]:
    """Redis commands and client CPU ms per second of an idle leader."""
    client = sync_client(settings.redis, "bench")
    leader = Leader(settings, client, Keys.of(settings.redis), lambda i: None)
    leader.step()  # takes the lead, makes the groups
    before, cpu, start = commands(ports), time.process_time(), time.monotonic()
    while time.monotonic() - start < seconds:
        leader.step()
    cpu = time.process_time() - cpu
    elapsed = time.monotonic() - start
    used = commands(ports) - before - len(ports)
    leader.stop()
    client.close()
    return used / elapsed, cpu * 1000 / elapsed


def reporter_cost(settings: Settings, ports: list[int], changes: int) -> tuple[float, float]:
    """Redis commands and client CPU ms per subscription change (batches of up to 256)."""

    async def go() -> tuple[float, float]:
        client = async_client(settings.redis, "bench")
        reporter = Reporter(client, Keys.of(settings.redis), settings, "bench-node")
        apps = [a.id for a in settings.apps]
        before, cpu = commands(ports), time.process_time()
        for i in range(changes):
            reporter.channel_subscription_changed(
                apps[i % len(apps)], f"ch-{i % 500}", +1 if (i // 500) % 2 == 0 else -1
            )
            if i % 256 == 255:
                await reporter.flush(30)
        await reporter.flush(30)
        cpu = time.process_time() - cpu
        used = commands(ports) - before - len(ports)
        await reporter.close()
        await client.aclose()
        return used / changes, cpu * 1000 / changes

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=46100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = EmbeddedRedis(Path(tmp) / "single", args.port + 10).start()
        broker = EmbeddedRedis(Path(tmp) / "broker", args.port + 11).start()
        nodes = start_cluster(Path(tmp), args.port)
        rows = []
        try:
            for apps in args.apps:
                runs: dict[str, list[tuple[float, float, float, float]]] = {"one": [], "cl": []}
                for _ in range(args.repeat):
                    for name, url, ports, cluster in (
                        ("one", single.url, [single.port], False),
                        ("cl", f"redis://127.0.0.1:{nodes[0].port}", [n.port for n in nodes], True),
                    ):
                        s = settings_for(url, cluster, apps, broker.url)
                        runs[name].append(
                            (
                                *leader_cost(s, ports, args.seconds),
                                *reporter_cost(s, ports, args.changes),
                            )
                        )
                rows.append((apps, runs))
        finally:
            for n in [*nodes, single, broker]:
                n.stop()
    lines = [
        f"# Webhooks on Redis Cluster: cost next to one Redis ({date.today()})",
        "",
        f"`.venv/bin/python -m bench.webhooks_cluster_cost --apps {' '.join(map(str, args.apps))}"
        f" --repeat {args.repeat}` ({args.seconds:g} s of an idle leader, {args.changes}"
        " subscription changes per run; 3 masters, all on this host). Ranges over the runs;"
        " ratio = cluster"
        " / one Redis (medians).",
        "",
        "| apps | what | one Redis | cluster | ratio |",
        "|---|---|---|---|---|",
    ]
    labels = (
        "idle leader: Redis commands / s",
        "idle leader: CPU ms / s",
        "reporter: Redis commands / change",
        "reporter: CPU ms / change",
    )
    for apps, runs in rows:
        for i, label in enumerate(labels):
            one = sorted(r[i] for r in runs["one"])
            cl = sorted(r[i] for r in runs["cl"])
            ratio = cl[len(cl) // 2] / one[len(one) // 2] if one[len(one) // 2] else float("nan")
            lines.append(
                f"| {apps} | {label} | {one[0]:.3g}-{one[-1]:.3g} | "
                f"{cl[0]:.3g}-{cl[-1]:.3g} | {ratio:.2f}x |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    path = unique_path(RESULTS, f"webhooks-cluster-cost-{date.today()}", ".md")
    path.write_text(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
