"""The coordinator's handle on the client processes that hold the subscribers."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from array import array
from dataclasses import dataclass, field

from bench.subscriber import process_main
from bench.wsframes import Endpoint

SUBSCRIBERS_PER_PROCESS = 5000   # one Python process parses ~0.5-1 M small frames/s
MAX_PROCESSES = 2                # the machine has 2 cores; the server needs one of them


def processes_for(subscribers: int, forced: int | None = None) -> int:
    if forced:
        return forced
    return max(1, min(MAX_PROCESSES, math.ceil(subscribers / SUBSCRIBERS_PER_PROCESS)))


@dataclass
class OpenResult:
    opened: int
    failed: int
    seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def accept_per_s(self) -> float:
        return self.opened / self.seconds if self.seconds else 0.0


@dataclass
class Deliveries:
    """What every subscriber of every client process received since the last arm()."""

    subscribers: int
    complete: int
    received: int
    missing: int
    out_of_order: int
    first_ns: int
    last_ns: int
    latencies_ns: array
    other_frames: int
    bad_frames: int
    reads: int                   # socket reads that carried frames
    trace: list[tuple[int, int]]  # (lane, seq) as received by one sample subscriber
    closed: int
    errors: list[str]
    client_cpu_s: float          # CPU the client processes spent since arm()
    trace_channel: str = ""      # the channel of the sample subscriber


class ClientPool:
    """N client processes, each driven by small commands over a Pipe."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.links = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=process_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.links.append((parent, proc))
        self._armed_cpu: list[float] = []

    @property
    def size(self) -> int:
        return len(self.links)

    async def _call(self, cmd: str, kwargs_per_process: list[dict], timeout: float) -> list[dict]:
        for (conn, _), kwargs in zip(self.links, kwargs_per_process, strict=True):
            conn.send((cmd, kwargs))
        replies = await asyncio.gather(*(
            asyncio.to_thread(_receive, conn, proc, timeout) for conn, proc in self.links))
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"client process failed: {reply['error']}")
        return replies

    async def open(self, endpoint: Endpoint, channel: str | None, total: int,
                   inflight: int = 100, timeout: float = 30.0,
                   signin: tuple[str, str] | None = None,
                   own_channels: bool = False, ping_s: float = 20.0) -> OpenResult:
        """``total`` subscribers on ``channel``; ``signin`` = (key, secret) to pusher:signin.
        ``own_channels``: subscriber n (0 .. total - 1) on its own ``f"{channel}-{n}"``;
        ``ping_s``: how often each sends ``pusher:ping``."""
        shares = _split(total, self.size)
        firsts = [sum(shares[:i]) for i in range(len(shares))]
        per_inflight = max(1, inflight // self.size)
        replies = await self._call("open", [
            dict(host=endpoint.host, port=endpoint.port, path=endpoint.path, channel=channel,
                 count=share, inflight=per_inflight, timeout=timeout, signin=signin,
                 first=first, own_channels=own_channels, ping_s=ping_s)
            for share, first in zip(shares, firsts, strict=True)
        ], timeout=timeout + total / 50 + 30)
        return OpenResult(
            opened=sum(r["opened"] for r in replies),
            failed=sum(r["failed"] for r in replies),
            seconds=max(r["seconds"] for r in replies),
            failures=[f for r in replies for f in r["failures"]][:3],
        )

    async def count(self) -> tuple[int, int]:
        """(still connected, opened) over every client process."""
        replies = await self._call("count", [{}] * self.size, 30)
        return sum(r["open"] for r in replies), sum(r["opened"] for r in replies)

    async def arm(self, expected_per_subscriber: int, record_latency: bool = False,
                  read_pause_ms: float = 0.0) -> None:
        replies = await self._call("arm", [dict(expected=expected_per_subscriber,
                                                record_latency=record_latency,
                                                read_pause_ms=read_pause_ms)] * self.size, 30)
        self._armed_cpu = [r["cpu_s"] for r in replies]

    async def wait(self, idle_s: float, max_s: float) -> Deliveries:
        replies = await self._call("wait", [dict(idle_s=idle_s, max_s=max_s)] * self.size,
                                   timeout=max_s + 60)
        latencies = array("q")
        for r in replies:
            latencies.frombytes(r["latencies"])
        return Deliveries(
            subscribers=sum(r["subscribers"] for r in replies),
            complete=sum(r["complete"] for r in replies),
            received=sum(r["received"] for r in replies),
            missing=sum(r["missing"] for r in replies),
            out_of_order=sum(r["out_of_order"] for r in replies),
            first_ns=min((r["first_ns"] for r in replies if r["first_ns"]), default=0),
            last_ns=max(r["last_ns"] for r in replies),
            latencies_ns=latencies,
            other_frames=sum(r["other_frames"] for r in replies),
            bad_frames=sum(r["bad_frames"] for r in replies),
            reads=sum(r["reads"] for r in replies),
            trace=_pairs(replies[0]["trace"]),
            closed=sum(r["closed"] for r in replies),
            errors=[e for r in replies for e in r["errors"]][:5],
            client_cpu_s=sum(r["cpu_s"] for r in replies) - sum(self._armed_cpu),
            trace_channel=replies[0]["trace_channel"],
        )

    async def close(self) -> None:
        try:
            await self._call("close", [{}] * self.size, 30)
        except Exception:
            pass
        for conn, proc in self.links:
            proc.join(5)
            if proc.is_alive():
                proc.kill()   # by its own PID: a process this pool started
                proc.join(5)
            conn.close()
        self.links = []


def _receive(conn, proc, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.2):
        if not proc.is_alive():
            return {"error": f"client process {proc.pid} exited with {proc.exitcode}"}
        if time.monotonic() > deadline:
            return {"error": f"client process {proc.pid} did not answer in {timeout:.0f}s"}
    return conn.recv()


def _pairs(raw: bytes) -> list[tuple[int, int]]:
    flat = array("q")
    flat.frombytes(raw)
    return list(zip(flat[0::2], flat[1::2], strict=True))


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
