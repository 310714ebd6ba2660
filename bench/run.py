"""Run bench scenarios against Pusher-protocol servers, one server at a time.

    .venv/bin/python -m bench.run fanout latency memory -t soketi -t clarion
    .venv/bin/python bench/run.py fanout -t 'mine=ws://127.0.0.1:7420,http://127.0.0.1:7421,1,app-key,app-secret,4242'

See bench/README.md for every option.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report  # noqa: E402
from bench.dashboard_watch import ConsoleWatcher  # noqa: E402
from bench.scenarios import SCENARIOS, Options  # noqa: E402
from bench.subscriber import raise_nofile  # noqa: E402
from bench.targets import (  # noqa: E402
    Target,
    TargetUnavailable,
    clarion_preset,
    parse_spec,
    soketi_preset,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SCENARIOS = ["memory", "fanout", "latency"]
RELEVANT = {
    "fanout": ["subscribers", "events", "batch", "inflight", "client_procs", "warmup", "padding",
               "signin", "read_pause_ms"],
    "channels": ["channel_subscribers", "channel_events", "batch", "inflight", "client_procs",
                 "warmup", "padding", "signin", "read_pause_ms"],
    "latency": ["rate", "latency_subscribers", "seconds", "client_procs", "padding", "signin"],
    "memory": ["connections", "client_procs", "signin"],
    "rest": ["requests", "inflight", "padding", "rest_batch", "rest_channels", "rest_keys"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help=f"{', '.join(SCENARIOS)} or all (default: {' '.join(DEFAULT_SCENARIOS)})")
    ap.add_argument("-t", "--target", action="append", dest="targets", default=[],
                    help="soketi | clarion | name=ws_url,http_url,app_id,key,secret[,pid...] "
                         "(repeatable; default: soketi and clarion)")
    d = Options()
    ap.add_argument("--subscribers", type=int, default=d.subscribers, help="fanout subscribers")
    ap.add_argument("--events", type=int, default=d.events, help="fanout events in total")
    ap.add_argument("--batch", type=int, default=d.batch,
                    help="events per batch request (fanout, channels)")
    ap.add_argument("--inflight", type=int, default=d.inflight,
                    help="requests in flight (fanout, channels, rest)")
    ap.add_argument("--channel-subscribers", type=int, default=d.channel_subscribers,
                    help="channels: subscribers, each on its own channel")
    ap.add_argument("--channel-events", type=int, default=d.channel_events,
                    help="channels: events published to each channel")
    ap.add_argument("--rate", type=float, default=d.rate, help="latency events/s")
    ap.add_argument("--latency-subscribers", type=int, default=d.latency_subscribers)
    ap.add_argument("--seconds", type=float, default=d.seconds, help="latency publishing time")
    ap.add_argument("--connections", type=int, default=d.connections, help="memory: idle conns")
    ap.add_argument("--requests", type=int, default=d.requests, help="rest: requests")
    ap.add_argument("--rest-batch", type=int, default=d.rest_batch,
                    help="rest: events per request (> 1: batch_events, at most 10)")
    ap.add_argument("--rest-channels", type=int, default=d.rest_channels,
                    help="rest: channels the events are spread over, round robin")
    ap.add_argument("--rest-keys", action="store_true",
                    help="rest: give each request its own idempotency_key (body field)")
    ap.add_argument("--client-procs", type=int, default=None,
                    help="client processes (default: 1 per 5,000 subscribers, at most 2)")
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--padding", type=int, default=d.padding, help="extra bytes per event")
    ap.add_argument("--signin", choices=["auto", "always", "never"], default=d.signin,
                    help="pusher:signin every subscriber (auto: all but the memory scenario)")
    ap.add_argument("--read-pause-ms", type=float, default=d.read_pause_ms,
                    help="fanout, channels: client blocks this long between loop turns so "
                         "each socket read takes many frames (cuts client CPU; arrival times up "
                         "to this late)")
    ap.add_argument("--idle-s", type=float, default=d.idle_s)
    ap.add_argument("--max-wait-s", type=float, default=d.max_wait_s)
    ap.add_argument("--scenario-timeout", type=float, default=600,
                    help="hard limit per scenario and server (s)")
    ap.add_argument("--soketi-port", type=int, default=7400)
    ap.add_argument("--clarion-ws-port", type=int, default=7410)
    ap.add_argument("--clarion-api-port", type=int, default=7411)
    ap.add_argument("--clarion-redis-port", type=int, default=7412,
                    help="embedded Redis of `clarion up`")
    ap.add_argument("--clarion-ws-processes", type=int, default=1)
    ap.add_argument("--clarion-worker-pool", choices=["prefork", "threads", "solo"],
                    default="prefork", help="worker.pool of the Clarion under test")
    ap.add_argument("--clarion-dashboard", choices=["off", "unwatched", "watched"],
                    default="unwatched",
                    help="the Clarion under test: dashboard off, on with nobody watching, or "
                         "with a console open on app 1 (bench/dashboard_watch.py)")
    ap.add_argument("--ratio", default="clarion/soketi", help="ratio column A/B ('' for none)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not args.scenarios:
        args.scenarios = DEFAULT_SCENARIOS
    if "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {sorted(unknown)}; choose from {list(SCENARIOS)}")
    for port in (args.soketi_port, args.clarion_ws_port, args.clarion_api_port,
                 args.clarion_redis_port):
        if not 7400 <= port <= 7499:
            print(f"note: port {port} is outside the bench range 7400-7499")
    return args


def build_targets(args: argparse.Namespace) -> list[Target]:
    targets = []
    for spec in args.targets or ["soketi", "clarion"]:
        if spec == "soketi":
            targets.append(soketi_preset(args.soketi_port))
        elif spec == "clarion":
            targets.append(clarion_preset(args.clarion_ws_port, args.clarion_api_port,
                                          args.clarion_ws_processes, args.clarion_redis_port,
                                          args.clarion_worker_pool,
                                          args.clarion_dashboard != "off"))
        else:
            targets.append(parse_spec(spec))
    return targets


def build_options(args: argparse.Namespace) -> Options:
    return Options(**{f.name: getattr(args, f.name) for f in fields(Options)})


def run_scenario(name: str, target: Target, opts: Options, timeout: float):
    async def bounded():
        return await asyncio.wait_for(SCENARIOS[name](target, opts), timeout)

    try:
        import uvloop
        return uvloop.run(bounded())
    except ImportError:
        return asyncio.run(bounded())


def run(args: argparse.Namespace) -> list[Path]:
    raise_nofile()
    opts = build_options(args)
    targets = build_targets(args)
    results: dict[str, dict] = {s: {} for s in args.scenarios}
    failures: dict[str, dict[str, str]] = {s: {} for s in args.scenarios}
    log_dir = Path(f"/tmp/clarion-bench-logs/{time.strftime('%Y%m%d-%H%M%S')}")
    for target in targets:
        print(f"== {target.name}: starting", flush=True)
        try:
            target.start(log_dir)
        except TargetUnavailable as exc:
            print(f"== {target.name}: unavailable\n{exc}", flush=True)
            for s in args.scenarios:
                failures[s][target.name] = str(exc)
            continue
        watcher = None
        if target.name == "clarion" and args.clarion_dashboard == "watched":
            watcher = ConsoleWatcher(target.app.http_url).start()
        try:
            for scenario in args.scenarios:
                print(f"-- {target.name} / {scenario}", flush=True)
                started = time.monotonic()
                try:
                    result = run_scenario(scenario, target, opts, args.scenario_timeout)
                except Exception as exc:
                    failures[scenario][target.name] = f"{type(exc).__name__}: {exc}"
                    print(f"   failed: {exc!r}", flush=True)
                    continue
                results[scenario][target.name] = result
                print_figures(result, time.monotonic() - started)
        finally:
            if watcher is not None:
                watcher.stop()
                print(f"   console: {watcher.polls} polls, {watcher.entries} log entries read",
                      flush=True)
            target.stop()
            print(f"== {target.name}: stopped (logs in {log_dir})", flush=True)
    written = []
    pair = tuple(args.ratio.split("/", 1)) if "/" in args.ratio else None
    for scenario in args.scenarios:
        options = {k: v for k, v in asdict(opts).items() if k in RELEVANT[scenario]}
        written += report.write(scenario, results[scenario], failures[scenario], options,
                                args.out, pair)
    for path in written:
        print(f"wrote {path}")
    return written


def print_figures(result, elapsed: float) -> None:
    for label, value in result.figures().items():
        print(f"   {label:<52} {report.fmt(value)}")
    if getattr(result, "sample_missing", ""):
        print(f"   one subscriber never got: {result.sample_missing}")
    errors = getattr(result, "errors", None)
    if errors:
        print(f"   errors: {errors[:3]}")
    print(f"   ({elapsed:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
