"""The scenarios: each is one async function (target, options) -> a result dataclass.

Every result has ``figures()``: the ordered (label -> value) rows of the report table. The
whole dataclass goes to the JSON file.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.clients import ClientPool, Deliveries, processes_for
from bench.procstats import MachineCpu, cpu_by_name, cpu_delta, own_cpu_s, rss_breakdown
from bench.publisher import Lane
from bench.targets import Target


@dataclass
class Options:
    subscribers: int = 1000          # fanout
    events: int = 2000               # fanout: events published in total
    batch: int = 10                  # fanout: events per batch_events request
    inflight: int = 4                # fanout/channels/rest: requests in flight (= lanes)
    channel_subscribers: int = 1000  # channels: subscribers, each on its own channel
    channel_events: int = 10         # channels: events published to each channel
    rate: float = 50.0               # latency: events per second
    latency_subscribers: int = 100
    seconds: float = 10.0            # latency: publishing time
    connections: int = 1000          # memory: idle connections
    requests: int = 2000             # rest: requests
    rest_batch: int = 1              # rest: events per request (> 1: batch_events)
    rest_channels: int = 1           # rest: channels the events go to, round robin
    rest_keys: bool = False          # rest: each request has its own idempotency_key
    client_procs: int | None = None  # None: one per 5,000 subscribers, at most 2
    warmup: int = 20                 # events published (and ignored) before measuring
    padding: int = 0                 # extra bytes in each event's data
    read_pause_ms: float = 50.0      # fanout/channels: client pauses between loop turns
    signin: str = "auto"             # pusher:signin each subscriber: auto (not for memory),
                                     # always, never. soketi's preset drops unsigned
                                     # connections after 30 s (user authentication is on).
    idle_s: float = 5.0              # stop waiting after this long without a delivery
    max_wait_s: float = 120.0        # hard cap on waiting for deliveries


def new_channel(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- measuring


@dataclass
class Usage:
    seconds: float
    server_cpu_s: float
    publisher_cpu_s: float
    machine_busy_pct: float
    server_cpu_by_name: dict[str, float] = field(default_factory=dict)


class Meter:
    """CPU of the server, of this (publisher) process and of the machine over a window."""

    def __init__(self, target: Target) -> None:
        self.server = target.processes()

    def start(self) -> Meter:
        self.before = self.server.sample()
        self.machine = MachineCpu()
        self.own = own_cpu_s()
        self.t0 = time.monotonic()
        return self

    def stop(self) -> Usage:
        after = self.server.sample()
        return Usage(seconds=time.monotonic() - self.t0,
                     server_cpu_s=cpu_delta(self.before, after),
                     publisher_cpu_s=own_cpu_s() - self.own,
                     machine_busy_pct=self.machine.busy_pct(),
                     server_cpu_by_name=cpu_by_name(self.before, after))


@dataclass
class PublishStats:
    requests: int = 0
    events: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    response_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    late: int = 0                      # latency: publishes that found every lane busy
    sample_error: str = ""

    def record(self, status: int, seconds: float, events: int, body: bytes) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.response_ms.append(seconds * 1000)
        if status == 200:
            self.events += events
        else:
            self.failed += 1
            self.sample_error = self.sample_error or f"{status} {body[:200]!r}"


def percentile(values, q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def other_cpu_pct(usage: Usage, client_cpu_s: float) -> float:
    """CPU used by neither server nor bench (other jobs on the box, kernel), % of one core."""
    machine_s = usage.machine_busy_pct / 100 * (os.cpu_count() or 1) * usage.seconds
    ours = usage.server_cpu_s + usage.publisher_cpu_s + client_cpu_s
    return max(0.0, pct(machine_s - ours, usage.seconds))


def pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


async def open_subscribers(target: Target, channel: str | None, count: int, opts: Options,
                           signin_by_default: bool = True,
                           own_channels: bool = False,
                           ping_s: float = 20.0) -> tuple[ClientPool, float]:
    """``own_channels``: ``channel`` is a prefix, subscriber n is on ``f"{channel}-{n}"``;
    ``ping_s``: how often each subscriber sends ``pusher:ping``."""
    pool = ClientPool(processes_for(count, opts.client_procs))
    signin = opts.signin == "always" or (opts.signin == "auto" and signin_by_default)
    try:
        opened = await pool.open(target.endpoint(), channel, count,
                                 signin=(target.app.key, target.app.secret) if signin else None,
                                 own_channels=own_channels, ping_s=ping_s)
    except BaseException:
        await pool.close()
        raise
    if opened.failed:
        await pool.close()
        raise RuntimeError(f"{opened.failed} of {count} subscribers failed: {opened.failures}")
    return pool, opened.accept_per_s


async def warm_up(lane: Lane, channel: str, count: int) -> None:
    for _ in range(count):
        await lane.event(channel, name="warmup")
    await asyncio.sleep(0.5)


def describe_missing(trace: list[tuple[int, int]], lanes: list[Lane]) -> str:
    """What one sample subscriber never got, as ``lane L: a-b, c`` sequence ranges."""
    parts = []
    for lane in lanes:
        got = {seq for index, seq in trace if index == lane.index}
        missing = sorted(set(range(lane.next_seq)) - got)
        if missing:
            parts.append(f"lane {lane.index}: {_ranges(missing)}")
    return "; ".join(parts)


def _ranges(values: list[int]) -> str:
    spans, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None], strict=True):
        if cur != prev + 1:
            spans.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    text = ", ".join(spans[:12])
    return text + (f" ... ({len(spans)} gaps)" if len(spans) > 12 else "")


def close_lanes(lanes: list[Lane]) -> None:
    for lane in lanes:
        lane.http.close()


# --------------------------------------------------------------------------- 1. fan-out


@dataclass
class DeliveryRun:
    """What the fanout and channels scenarios both measure."""

    batch: int
    inflight: int
    client_processes: int
    deliveries_expected: int
    deliveries_received: int
    missing: int
    out_of_order: int
    complete_subscribers: int
    seconds: float                    # first publish -> last delivery
    deliveries_per_s: float
    api_events_per_s: float           # events accepted by the API per second while publishing
    failed_requests: int
    server_cpu_s: float
    server_cpu_us_per_delivery: float
    server_cpu_pct: float
    client_cpu_pct: float
    publisher_cpu_pct: float
    machine_busy_pct: float
    other_cpu_pct: float              # the rest of the machine: other processes, softirq
    accept_per_s: float
    frames_per_read: float            # client side: > 1 means the server coalesces writes
    sample_missing: str               # what one subscriber never got
    errors: list[str]

    def figures(self) -> dict[str, float]:
        return {
            "deliveries/s": self.deliveries_per_s,
            "first publish -> last delivery (s)": self.seconds,
            "API accepted events/s": self.api_events_per_s,
            "missing deliveries": self.missing,
            "out-of-order deliveries": self.out_of_order,
            "failed requests": self.failed_requests,
            "server CPU us/delivery": self.server_cpu_us_per_delivery,
            "server CPU %": self.server_cpu_pct,
            f"client CPU % ({self.client_processes} proc)": self.client_cpu_pct,
            "publisher CPU %": self.publisher_cpu_pct,
            "machine busy % (of all CPUs)": self.machine_busy_pct,
            "other CPU on the machine % (of one core)": self.other_cpu_pct,
            "client frames per socket read": self.frames_per_read,
        }


def measured(got: Deliveries, usage: Usage, published: PublishStats, t0: int, expected: int,
             accept_per_s: float, sample_missing: str) -> dict[str, Any]:
    """The DeliveryRun fields computed alike for every delivery scenario."""
    seconds = (got.last_ns - t0) / 1e9 if got.last_ns else float("nan")
    return dict(
        deliveries_expected=expected, deliveries_received=got.received, missing=got.missing,
        out_of_order=got.out_of_order, complete_subscribers=got.complete, seconds=seconds,
        deliveries_per_s=expected / seconds if got.missing == 0 else got.received / seconds,
        api_events_per_s=published.events / published.seconds,
        failed_requests=published.failed, server_cpu_s=usage.server_cpu_s,
        server_cpu_us_per_delivery=1e6 * usage.server_cpu_s / max(1, got.received),
        # CPU over the delivery window (any idle tail after the last delivery costs ~nothing)
        server_cpu_pct=pct(usage.server_cpu_s, seconds),
        client_cpu_pct=pct(got.client_cpu_s, seconds),
        publisher_cpu_pct=pct(usage.publisher_cpu_s, seconds),
        machine_busy_pct=usage.machine_busy_pct,
        other_cpu_pct=other_cpu_pct(usage, got.client_cpu_s),
        accept_per_s=accept_per_s,
        frames_per_read=got.received / max(1, got.reads),
        sample_missing=sample_missing,
        errors=got.errors + ([published.sample_error] if published.sample_error else []),
    )


@dataclass
class FanoutResult(DeliveryRun):
    subscribers: int
    events: int


async def publish_batches(lanes: list[Lane], channel: str, total: int, batch: int,
                          padding: int) -> PublishStats:
    stats = PublishStats()
    remaining = total
    started = time.perf_counter()

    async def run_lane(lane: Lane) -> None:
        nonlocal remaining
        while remaining > 0:
            count = min(batch, remaining)
            remaining -= count
            response = await lane.batch(channel, count, padding)
            stats.record(response.status, response.seconds, count, response.body)

    await asyncio.gather(*(run_lane(lane) for lane in lanes))
    stats.seconds = time.perf_counter() - started
    return stats


async def fanout(target: Target, opts: Options) -> FanoutResult:
    channel = new_channel("fanout")
    pool, accept_per_s = await open_subscribers(target, channel, opts.subscribers, opts)
    lanes = target.publisher().lanes(opts.inflight)
    try:
        await warm_up(lanes[0], channel, opts.warmup)
        await pool.arm(opts.events, read_pause_ms=opts.read_pause_ms)
        meter = Meter(target).start()
        t0 = time.monotonic_ns()
        published = await publish_batches(lanes, channel, opts.events, opts.batch, opts.padding)
        got = await pool.wait(opts.idle_s, opts.max_wait_s)
        usage = meter.stop()
    finally:
        close_lanes(lanes)
        await pool.close()
    return FanoutResult(
        subscribers=got.subscribers, events=opts.events, batch=opts.batch,
        inflight=opts.inflight, client_processes=pool_size(opts.subscribers, opts),
        **measured(got, usage, published, t0, opts.events * got.subscribers, accept_per_s,
                   describe_missing(got.trace, lanes)),
    )


def pool_size(subscribers: int, opts: Options) -> int:
    return processes_for(subscribers, opts.client_procs)


# --------------------------------------------------------------------------- 1b. many channels


@dataclass
class ChannelsResult(DeliveryRun):
    channels: int                     # = subscribers, one per channel
    events_per_channel: int


def round_robin_batches(channels: int, per_channel: int, batch: int) -> list[list[int]]:
    """Channel indexes of each request: event j goes to channel j % channels, so each
    channel gets ``per_channel`` events and a request (batch <= channels) has no channel
    twice."""
    total = channels * per_channel
    return [[j % channels for j in range(start, min(total, start + batch))]
            for start in range(0, total, batch)]


async def publish_round_robin(lanes: list[Lane], channels: list[str], per_channel: int,
                              batch: int, padding: int
                              ) -> tuple[PublishStats, dict[str, list[tuple[int, int]]]]:
    """The requests of ``round_robin_batches`` in order, each on whichever lane is free.
    Also returns what went to each channel: its (lane, seq) pairs in publish order. A lane's
    requests are sequential, so a channel must get each lane's seqs in increasing order
    (lanes interleave freely): the subscriber's per-lane check is a per-channel check."""
    stats = PublishStats()
    sent: dict[str, list[tuple[int, int]]] = {ch: [] for ch in channels}
    requests = iter(round_robin_batches(len(channels), per_channel, batch))
    started = time.perf_counter()

    async def run_lane(lane: Lane) -> None:
        for indexes in requests:
            names = [channels[i] for i in indexes]
            for offset, name in enumerate(names):
                sent[name].append((lane.index, lane.next_seq + offset))
            response = await lane.batch_to(names, padding)
            stats.record(response.status, response.seconds, len(names), response.body)

    await asyncio.gather(*(run_lane(lane) for lane in lanes))
    stats.seconds = time.perf_counter() - started
    return stats, sent


async def warm_up_channels(lane: Lane, channels: list[str], count: int, batch: int) -> None:
    """``count`` warm-up events (not counted by subscribers), round robin over the channels."""
    for start in range(0, count, batch):
        names = [channels[j % len(channels)] for j in range(start, min(count, start + batch))]
        await lane.batch_to(names, name="warmup")
    await asyncio.sleep(0.5)


def describe_missing_on(channel: str, trace: list[tuple[int, int]],
                        sent: list[tuple[int, int]]) -> str:
    """What the sample subscriber (on ``channel``) never got of what was sent to it."""
    got = set(trace)
    parts = []
    for lane in sorted({index for index, _ in sent}):
        missing = sorted(seq for index, seq in sent if index == lane and (index, seq) not in got)
        if missing:
            parts.append(f"lane {lane}: {_ranges(missing)}")
    return f"{channel}: " + "; ".join(parts) if parts else ""


async def many_channels(target: Target, opts: Options) -> ChannelsResult:
    """Many channels: each subscriber on its own channel, ``channel_events`` to each."""
    prefix = new_channel("channels")
    names = [f"{prefix}-{n}" for n in range(opts.channel_subscribers)]
    pool, accept_per_s = await open_subscribers(target, prefix, opts.channel_subscribers, opts,
                                                own_channels=True)
    lanes = target.publisher().lanes(opts.inflight)
    try:
        if opts.warmup:
            await warm_up_channels(lanes[0], names, opts.warmup, opts.batch)
        await pool.arm(opts.channel_events, read_pause_ms=opts.read_pause_ms)
        meter = Meter(target).start()
        t0 = time.monotonic_ns()
        published, sent = await publish_round_robin(lanes, names, opts.channel_events,
                                                    opts.batch, opts.padding)
        got = await pool.wait(opts.idle_s, opts.max_wait_s)
        usage = meter.stop()
    finally:
        close_lanes(lanes)
        await pool.close()
    return ChannelsResult(
        channels=got.subscribers, events_per_channel=opts.channel_events, batch=opts.batch,
        inflight=opts.inflight, client_processes=pool_size(opts.channel_subscribers, opts),
        **measured(got, usage, published, t0, opts.channel_events * got.subscribers,
                   accept_per_s, describe_missing_on(got.trace_channel, got.trace,
                                                     sent.get(got.trace_channel, []))),
    )


# --------------------------------------------------------------------------- 2. latency


PERCENTILES = (50, 90, 99, 99.9)


@dataclass
class LatencyResult:
    subscribers: int
    rate: float
    seconds: float
    events: int
    deliveries: int
    missing: int
    out_of_order: int
    latency_ms: dict[str, float]      # p50, p90, p99, p99.9, max, mean
    api_response_ms: dict[str, float]
    late_publishes: int
    failed_requests: int
    server_cpu_us_per_delivery: float
    server_cpu_pct: float
    client_cpu_pct: float
    machine_busy_pct: float
    other_cpu_pct: float
    sample_missing: str
    errors: list[str]

    def figures(self) -> dict[str, float]:
        rows = {f"latency {k} (ms)": v for k, v in self.latency_ms.items()}
        rows.update({
            "deliveries": self.deliveries,
            "missing deliveries": self.missing,
            "out-of-order deliveries": self.out_of_order,
            "API response p50 (ms)": self.api_response_ms["p50"],
            "API response p99 (ms)": self.api_response_ms["p99"],
            "late publishes": self.late_publishes,
            "failed requests": self.failed_requests,
            "server CPU us/delivery": self.server_cpu_us_per_delivery,
            "server CPU %": self.server_cpu_pct,
            "client CPU %": self.client_cpu_pct,
            "other CPU on the machine % (of one core)": self.other_cpu_pct,
        })
        return rows


async def publish_steadily(lanes: list[Lane], channel: str, rate: float, count: int,
                           padding: int) -> PublishStats:
    """``count`` single events at ``rate``/s on a fixed schedule, on whichever lane is free."""
    stats = PublishStats()
    free: asyncio.Queue[Lane] = asyncio.Queue()
    for lane in lanes:
        free.put_nowait(lane)

    async def send(lane: Lane) -> None:
        try:
            response = await lane.event(channel, padding)
            stats.record(response.status, response.seconds, 1, response.body)
        finally:
            free.put_nowait(lane)

    tasks = []
    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if free.empty():
            stats.late += 1
        tasks.append(asyncio.create_task(send(await free.get())))
    await asyncio.gather(*tasks)
    stats.seconds = time.monotonic() - started
    return stats


def summarize_ms(sorted_values, scale: float) -> dict[str, float]:
    if not sorted_values:
        return {}
    summary = {f"p{q:g}": percentile(sorted_values, q) / scale for q in PERCENTILES}
    summary["max"] = sorted_values[-1] / scale
    summary["mean"] = sum(sorted_values) / len(sorted_values) / scale
    return summary


async def latency(target: Target, opts: Options) -> LatencyResult:
    channel = new_channel("latency")
    count = max(1, int(opts.rate * opts.seconds))
    pool, _ = await open_subscribers(target, channel, opts.latency_subscribers, opts)
    lanes = target.publisher().lanes(4)
    try:
        await warm_up(lanes[0], channel, opts.warmup)
        await pool.arm(count, record_latency=True)
        meter = Meter(target).start()
        published = await publish_steadily(lanes, channel, opts.rate, count, opts.padding)
        got: Deliveries = await pool.wait(opts.idle_s, opts.max_wait_s)
        usage = meter.stop()
    finally:
        close_lanes(lanes)
        await pool.close()
    return LatencyResult(
        subscribers=got.subscribers, rate=opts.rate, seconds=opts.seconds, events=count,
        deliveries=got.received, missing=got.missing, out_of_order=got.out_of_order,
        latency_ms=summarize_ms(sorted(got.latencies_ns), 1e6),
        api_response_ms=summarize_ms(sorted(published.response_ms), 1.0),
        late_publishes=published.late, failed_requests=published.failed,
        server_cpu_us_per_delivery=1e6 * usage.server_cpu_s / max(1, got.received),
        server_cpu_pct=pct(usage.server_cpu_s, usage.seconds),
        client_cpu_pct=pct(got.client_cpu_s, usage.seconds),
        machine_busy_pct=usage.machine_busy_pct,
        other_cpu_pct=other_cpu_pct(usage, got.client_cpu_s),
        sample_missing=describe_missing(got.trace, lanes),
        errors=got.errors + ([published.sample_error] if published.sample_error else []),
    )


# --------------------------------------------------------------------------- 3. memory


@dataclass
class MemoryResult:
    connections: int
    rss_before_mb: float
    rss_after_mb: float
    kb_per_connection: float
    largest_process: str
    largest_process_kb_per_connection: float
    accept_per_s: float
    server_cpu_us_per_connection: float
    rss_growth_by_process_kb: dict[str, float]

    def figures(self) -> dict[str, float]:
        return {
            "RSS per idle connection (KB, all server processes)": self.kb_per_connection,
            "RSS before (MB)": self.rss_before_mb,
            "RSS with connections (MB)": self.rss_after_mb,
            "largest process growth per connection (KB)": self.largest_process_kb_per_connection,
            "connections opened/s": self.accept_per_s,
            "server CPU us per connection opened": self.server_cpu_us_per_connection,
        }


async def memory(target: Target, opts: Options, settle_s: float = 2.0) -> MemoryResult:
    """Idle connections, each subscribed to one shared public channel."""
    server = target.processes()
    await asyncio.sleep(settle_s)
    before = server.sample()
    pool, accept_per_s = await open_subscribers(target, new_channel("idle"), opts.connections,
                                                opts, signin_by_default=False)
    try:
        await asyncio.sleep(settle_s)
        after = server.sample()
    finally:
        await pool.close()
    n = opts.connections
    growth = rss_breakdown(before, after)
    largest = max(growth, key=growth.get) if growth else "-"
    return MemoryResult(
        connections=n, rss_before_mb=before.rss_total / 2**20,
        rss_after_mb=after.rss_total / 2**20,
        kb_per_connection=(after.rss_total - before.rss_total) / 1024 / n,
        largest_process=largest,
        largest_process_kb_per_connection=growth.get(largest, 0) / 1024 / n,
        accept_per_s=accept_per_s,
        server_cpu_us_per_connection=1e6 * cpu_delta(before, after) / n,
        rss_growth_by_process_kb={k: v / 1024 for k, v in growth.items()},
    )


# --------------------------------------------------------------------------- 4. REST


@dataclass
class RestResult:
    requests: int
    inflight: int
    requests_per_s: float
    failed_requests: int
    statuses: dict[int, int]
    response_ms: dict[str, float]
    server_cpu_us_per_request: float
    server_cpu_pct: float
    publisher_cpu_pct: float
    sample_error: str
    events_per_request: int = 1
    # Server CPU per request by process label (Clarion: API, worker, node, Redis).
    server_cpu_us_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def api_cpu_us_per_request(self) -> float:
        """Clarion's API processes alone (NaN for another server)."""
        api = [us for name, us in self.server_cpu_us_by_process.items()
               if name.endswith("gateway.cli api")]
        return sum(api) if api else float("nan")

    def figures(self) -> dict[str, float]:
        return {
            f"requests/s ({self.events_per_request} event(s) each)": self.requests_per_s,
            "events accepted/s": self.requests_per_s * self.events_per_request,
            "response p50 (ms)": self.response_ms.get("p50", float("nan")),
            "response p99 (ms)": self.response_ms.get("p99", float("nan")),
            "failed requests": self.failed_requests,
            "server CPU us/request": self.server_cpu_us_per_request,
            "of which the API process(es)": self.api_cpu_us_per_request,
            "server CPU %": self.server_cpu_pct,
            "publisher CPU %": self.publisher_cpu_pct,
        }


async def rest(target: Target, opts: Options) -> RestResult:
    """Single-event POST /events to a channel nobody is subscribed to, `inflight` at a time."""
    channel = new_channel("rest")
    channels = [f"{channel}-{i}" for i in range(opts.rest_channels)]
    lanes = target.publisher().lanes(opts.inflight)
    stats = PublishStats()
    remaining = opts.requests
    turn = 0

    async def run_lane(lane: Lane) -> None:
        nonlocal remaining, turn
        while remaining > 0:
            remaining -= 1
            extra = {"idempotency_key": f"{channel}-{remaining}"} if opts.rest_keys else None
            if opts.rest_batch > 1:
                names = [channels[(turn + i) % len(channels)] for i in range(opts.rest_batch)]
                turn += opts.rest_batch
                response = await lane.batch_to(names, opts.padding, extra=extra)
            else:
                response = await lane.event(channels[turn % len(channels)], opts.padding,
                                            extra=extra)
                turn += 1
            stats.record(response.status, response.seconds, 1, response.body)

    try:
        await warm_up(lanes[0], channel, opts.warmup)
        meter = Meter(target).start()
        await asyncio.gather(*(run_lane(lane) for lane in lanes))
        usage = meter.stop()
    finally:
        close_lanes(lanes)
    return RestResult(
        requests=stats.requests, inflight=opts.inflight,
        requests_per_s=stats.requests / usage.seconds, failed_requests=stats.failed,
        events_per_request=max(1, opts.rest_batch),
        statuses=stats.statuses, response_ms=summarize_ms(sorted(stats.response_ms), 1.0),
        server_cpu_us_per_request=1e6 * usage.server_cpu_s / max(1, stats.requests),
        server_cpu_pct=pct(usage.server_cpu_s, usage.seconds),
        publisher_cpu_pct=pct(usage.publisher_cpu_s, usage.seconds),
        sample_error=stats.sample_error,
        server_cpu_us_by_process={name: 1e6 * s / max(1, stats.requests)
                                  for name, s in usage.server_cpu_by_name.items()},
    )


SCENARIOS = {"memory": memory, "fanout": fanout, "channels": many_channels, "latency": latency,
             "rest": rest}
