"""Resume after a node restart, at scale: many clients, a node SIGKILLed under them.

    .venv/bin/python -m bench.resume_bench                       # 10,000 clients, resume on
    .venv/bin/python -m bench.resume_bench --plain               # the same without resume
    .venv/bin/python -m bench.resume_bench --clients 2000 --rate 50 --suffix=-small

It starts Clarion (`clarion up`, one node process, bench/targets.py), opens ``--clients``
WebSocket clients (picows, spread over ``--procs`` client processes) on ``--channels`` public
channels, and publishes ``--rate`` events/s round robin over the channels through the signed
REST API, each event numbered per channel. After ``--kill-after`` seconds it SIGKILLs the
node process; `clarion up` starts a new one, and the clients reconnect (each after a random
0-1 s, as pusher-js spreads its reconnects) and subscribe again: with the resume extension
(docs/resume.md: the last serial per channel in ``clarion``) or, with ``--plain``, as plain
pusher-js does. Publishing goes on throughout and stops at ``--seconds``.

Reported: events each client should have had, missing, duplicated and out-of-order ones
(counted at every client from the per-channel numbers); resume failures; for the events
published in the ``OUTAGE`` seconds after the kill, when the last of them reached its last
client ("caught up") and their delivery latency; server CPU per resumed client over the
recovery window (every process of the deployment). Results go to
``bench/results/resume-<date><suffix>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from picows import WSListener, WSMsgType, ws_connect  # noqa: E402

from bench.procstats import ServerProcesses, cpu_delta  # noqa: E402
from bench.publisher import HttpConnection  # noqa: E402
from bench.subscriber import raise_nofile  # noqa: E402
from bench.targets import clarion_preset  # noqa: E402
from bench.wsframes import PUSHER_QUERY  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EVENT = "seq"
# Events published this long after the kill are the ones the outage costs.
OUTAGE = 3.0
# pusher-js gives up a connection attempt whose handshake (pusher:connection_established) has
# not completed in 15 s and tries again (its default strategy's `timeout`); so does this client.
ESTABLISH_TIMEOUT = 15.0


# --------------------------------------------------------------------------- client process


@dataclass
class ClientStats:
    """What one client process saw, summed over its clients."""

    clients: int = 0
    subscribed: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    resume_failed: int = 0
    reconnects: int = 0
    # Connections that were upgraded but got no pusher:connection_established in time, and
    # were given up on and made again (pusher-js does the same: docs/resume.md).
    establish_timeouts: int = 0
    closed_on_return: int = 0  # connections ws_connect returned already closed (see connect)
    errors: list[str] = field(default_factory=list)


def _client_main(conn, url: str, first: int, count: int, channels: int, resume: bool) -> None:
    raise_nofile()
    asyncio.run(_ClientProcess(conn, url, first, count, channels, resume).run())


class _ClientProcess:
    def __init__(self, conn, url: str, first: int, count: int, channels: int,
                 resume: bool) -> None:
        self.conn, self.url, self.resume = conn, url, resume
        self.clients = [_Client(self, i, f"bench-resume-{i % channels}")
                        for i in range(first, first + count)]
        self.stats = ClientStats(clients=count)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for batch in range(0, len(self.clients), 200):
            await asyncio.gather(*(c.connect() for c in self.clients[batch:batch + 200]))
        deadline = loop.time() + 60
        while not all(c.subscribed for c in self.clients) and loop.time() < deadline:
            await asyncio.sleep(0.1)
        self.conn.send(("subscribed", sum(c.subscribed for c in self.clients)))
        while True:
            cmd = await loop.run_in_executor(None, self.conn.recv)
            if cmd[0] == "report":
                self.conn.send(("report", self._report(*cmd[1:])))
            elif cmd[0] == "count":
                self.conn.send(("count", sum(c.subscribed for c in self.clients)))
            elif cmd[0] == "stop":
                return

    def _report(self, published: dict[str, int], killed_at: float) -> dict:
        stats = self.stats
        stats.subscribed = sum(c.subscribed for c in self.clients)
        stats.received = sum(len(c.got) for c in self.clients)
        missing, arrivals, latencies = 0, [], []
        for c in self.clients:
            missing += sum(1 for n in range(published.get(c.channel, 0)) if n not in c.got)
            for sent, received in c.got.values():
                if killed_at <= sent < killed_at + OUTAGE:
                    arrivals.append(received)
                    latencies.append(received - sent)
        states = Counter(c.state for c in self.clients)
        stats.errors.append(f"client states: {dict(states)}")
        return {"stats": stats.__dict__, "missing": missing,
                "last_arrival": max(arrivals, default=None), "latencies": latencies}


class _Client:
    __slots__ = ("owner", "index", "channel", "transport", "socket_id", "previous_socket",
                 "serial", "got", "last_n", "subscribed", "times", "state", "generation",
                 "close_code")

    def __init__(self, owner: _ClientProcess, index: int, channel: str) -> None:
        self.owner, self.index, self.channel = owner, index, channel
        self.transport = None
        self.socket_id: str | None = None
        self.previous_socket: str | None = None
        self.serial: int | None = None
        self.got: dict[int, tuple[float, float]] = {}  # number -> (published, received)
        self.last_n = -1
        self.subscribed = False
        self.times = 0
        self.state = "new"
        self.generation = 0  # which connection is the current one (see _Listener)
        self.close_code: int | None = None  # of the server's close frame, if it sent one

    async def connect(self) -> None:
        self.state = "connecting"
        while True:
            try:
                self.generation += 1
                # Bound now: this attempt's generation, not the one current when picows
                # makes the listener (another attempt may have begun by then).
                self.transport, _ = await ws_connect(
                    functools.partial(_Listener, self, self.generation), self.owner.url,
                    websocket_handshake_timeout=10)
                if self.transport.underlying_transport.is_closing():
                    # picows (2.x), its loop overloaded by a reconnect storm, was seen to
                    # return a connection it had already closed (its handshake timeout):
                    # neither on_ws_connected nor on_ws_disconnected is ever called for it.
                    self.owner.stats.closed_on_return += 1
                    raise ConnectionResetError("ws_connect returned a closed connection")
                if self.state == "connecting":
                    self.state = "upgraded"
                    asyncio.get_running_loop().call_later(
                        ESTABLISH_TIMEOUT, self._check_established, self.generation)
                return
            except Exception as exc:  # noqa: BLE001 - the node is restarting: try again
                if len(self.owner.stats.errors) < 5:
                    self.owner.stats.errors.append(f"connect: {exc!r}"[:200])
                await asyncio.sleep(0.25 + random.random() * 0.25)

    def on_message(self, transport, msg: dict) -> None:
        event = msg.get("event")
        if event == EVENT:
            self._event(msg)
        elif event == "pusher:connection_established":
            self.state = "established"
            self.socket_id = json.loads(msg["data"])["socket_id"]
            self._subscribe(transport)
        elif event == "pusher_internal:subscription_succeeded":
            self.subscribed, self.state = True, "subscribed"
            if "serial" in msg:
                self.serial = msg["serial"]
        elif event == "clarion:resume_failed":
            self.owner.stats.resume_failed += 1
        elif event == "pusher:ping":
            transport.send(WSMsgType.TEXT, b'{"event":"pusher:pong","data":{}}')

    def _subscribe(self, transport) -> None:
        data: dict = {"auth": "", "channel": self.channel}
        if self.owner.resume:
            data["clarion"] = {"v": 1}
            if self.serial is not None:
                data["clarion"].update(serial=self.serial, socket_id=self.previous_socket)
        frame = json.dumps({"event": "pusher:subscribe", "data": data}).encode()
        transport.send(WSMsgType.TEXT, frame)

    def _event(self, msg: dict) -> None:
        data = json.loads(msg["data"])
        n = data["n"]
        stats = self.owner.stats
        if n in self.got:
            stats.duplicates += 1
        elif n < self.last_n:
            stats.out_of_order += 1
        self.got.setdefault(n, (data["t"], time.time()))
        self.last_n = max(self.last_n, n)
        if "serial" in msg:
            self.serial = msg["serial"]

    def _check_established(self, generation: int) -> None:
        """Under a reconnect storm a few upgraded connections were seen to get no
        connection_established and no close either (the socket gone on both ends, the client
        library not told). pusher-js gives such a connection up after ESTABLISH_TIMEOUT and
        connects again; so does this client, or it would wait forever and count as missing."""
        if generation != self.generation or self.state != "upgraded":
            return
        self.owner.stats.establish_timeouts += 1
        self.generation += 1  # the old connection's callbacks are ignored from now on
        if self.transport is not None:
            self.transport.disconnect(graceful=False)
        self.lost()

    def lost(self) -> None:
        self.state = "lost"
        self.owner.stats.reconnects += 1
        self.previous_socket, self.subscribed = self.socket_id, False
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        # pusher-js reconnects at once when told to (4200-4299: a draining node), and spreads
        # its reconnects otherwise (a lost connection).
        code, self.close_code = self.close_code, None
        if not (code is not None and 4200 <= code < 4300):
            await asyncio.sleep(random.random())
        await self.connect()


class _Listener(WSListener):
    """One connection of a _Client (a new one per reconnect)."""

    def __init__(self, client: _Client, generation: int) -> None:
        super().__init__()
        self.client, self.generation = client, generation

    def on_ws_frame(self, transport, frame) -> None:
        if self.generation != self.client.generation:
            return
        if frame.msg_type is WSMsgType.TEXT:
            self.client.on_message(transport, json.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type is WSMsgType.CLOSE:
            self.client.close_code = frame.get_close_code().value
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        if self.generation == self.client.generation:
            self.client.lost()


# --------------------------------------------------------------------------- coordinator


@dataclass
class Options:
    clients: int = 10_000
    channels: int = 100
    rate: float = 100.0
    seconds: float = 30.0
    kill_after: float = 8.0
    procs: int = 2
    plain: bool = False
    ws_port: int = 7440
    api_port: int = 7441
    suffix: str = ""


async def _publish(target, channels: int, rate: float, until: float,
                   published: dict[str, int]) -> None:
    http = HttpConnection(target.publisher().host, target.publisher().port)
    publisher = target.publisher()
    interval, due, turn = 1.0 / rate, time.monotonic(), 0
    while time.monotonic() < until:
        due = max(due + interval, time.monotonic() - 1.0)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        channel = f"bench-resume-{turn % channels}"
        n = published.get(channel, 0)
        data = json.dumps({"n": n, "t": time.time()})
        response = await publisher.post("events", {
            "name": EVENT, "channels": [channel], "data": data}, http)
        if response.status == 200:
            published[channel] = n + 1
        turn += 1
    http.close()


async def _all_subscribed(links: list, clients: int, timeout: float = 120.0) -> float | None:
    """When every client was subscribed again (unix time), polling the client processes."""
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        counts = []
        for parent, _ in links:
            parent.send(("count",))
            counts.append((await loop.run_in_executor(None, parent.recv))[1])
        if sum(counts) >= clients:
            return time.time()
        await asyncio.sleep(0.5)
    return None


def _node_pid(root_pid: int) -> int:
    for proc in psutil.Process(root_pid).children(recursive=True):
        if "ws" in proc.cmdline()[3:4]:
            return proc.pid
    raise RuntimeError("no node process under clarion up")


async def run(opts: Options, target) -> dict:
    ctx = multiprocessing.get_context("spawn")
    url = f"ws://127.0.0.1:{opts.ws_port}/app/{target.app.key}?{PUSHER_QUERY}"
    per = opts.clients // opts.procs
    links = []
    try:
        for p in range(opts.procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_main, daemon=True, args=(
                child, url, p * per, per, opts.channels, not opts.plain))
            proc.start()
            links.append((parent, proc))
        subscribed = sum(parent.recv()[1] for parent, _ in links)
        published: dict[str, int] = {}
        started = time.monotonic()
        server = ServerProcesses(target.pids)
        publishing = asyncio.create_task(_publish(
            target, opts.channels, opts.rate, started + opts.seconds, published))
        await asyncio.sleep(opts.kill_after)
        before = server.sample()
        killed_at = time.time()
        psutil.Process(_node_pid(target.pids[0])).send_signal(signal.SIGKILL)
        await asyncio.sleep(0.5)  # the clients notice
        resubscribed = await _all_subscribed(links, opts.clients // opts.procs * opts.procs)
        await publishing
        await asyncio.sleep(3)  # the last events settle
        after = server.sample()
        reports = []
        for parent, _ in links:
            parent.send(("report", published, killed_at))
            reports.append(parent.recv()[1])
        summary = _summary(opts, subscribed, published, reports, killed_at,
                           cpu_delta(before, after))
        summary["every client subscribed again (s after the kill)"] = (
            round(resubscribed - killed_at, 2) if resubscribed else "not within 120 s")
        return summary
    finally:
        for parent, proc in links:
            try:
                parent.send(("stop",))
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def _summary(opts: Options, subscribed: int, published: dict[str, int], reports: list[dict],
             killed_at: float, server_cpu: float) -> dict:
    stats = [r["stats"] for r in reports]
    expected = sum(published.get(f"bench-resume-{i % opts.channels}", 0)
                   for i in range(opts.clients // opts.procs * opts.procs))
    arrivals = [r["last_arrival"] for r in reports if r["last_arrival"] is not None]
    latencies = sorted(x for r in reports for x in r["latencies"])

    def pct(q: float) -> float | str:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) \
            if latencies else "-"

    return {
        "mode": "plain pusher protocol" if opts.plain else "resume (docs/resume.md)",
        "clients": opts.clients, "subscribed before the kill": subscribed,
        "events published": sum(published.values()), "deliveries expected": expected,
        "missing": sum(r["missing"] for r in reports),
        **client_counts(stats),
        f"events of the {OUTAGE:g} s after the kill: last one received (s after the kill)": (
            round(max(arrivals) - killed_at, 2) if arrivals else "-"),
        f"events of the {OUTAGE:g} s after the kill: latency p50 / p99 / max (ms)": (
            f"{pct(0.5)} / {pct(0.99)} / {pct(1.0)}"),
        "server CPU in the recovery window (s)": round(server_cpu, 2),
        "server CPU per resumed client (ms)": round(server_cpu * 1000 / max(1, opts.clients), 3),
        **client_notes(stats),
    }


def client_counts(stats: list[dict]) -> dict[str, int]:
    """What the client processes counted, summed (also bench/rolling_restart.py's)."""
    return {
        "duplicated": sum(s["duplicates"] for s in stats),
        "out of order": sum(s["out_of_order"] for s in stats),
        "resume failed": sum(s["resume_failed"] for s in stats),
        "reconnects": sum(s["reconnects"] for s in stats),
        "connections given up unestablished": sum(s["establish_timeouts"] for s in stats),
        "connections the client library returned closed": sum(
            s["closed_on_return"] for s in stats),
    }


def client_notes(stats: list[dict]) -> dict[str, list[str]]:
    """The client processes' first errors, and the state every client was left in."""
    notes = [e for s in stats for e in s["errors"]]
    return {"client errors": [e for e in notes if not e.startswith("client states")][:3],
            "client states": [e for e in notes if e.startswith("client states")]}


def write_table(name: str, suffix: str, title: str, command: str, summary: dict) -> Path:
    """``summary`` as a two-column table in bench/results/<name>-<date><suffix>.md."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{date.today().isoformat()}{suffix}.md"
    lines = [f"# {title}", "", f"`{command}`", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write(summary: dict, opts: Options) -> Path:
    return write_table(
        "resume", opts.suffix, f"Resume after a node SIGKILL: {summary['mode']}",
        f"python -m bench.resume_bench --clients {opts.clients} --channels {opts.channels} "
        f"--rate {opts.rate:g} --seconds {opts.seconds:g} --kill-after {opts.kill_after:g}"
        f"{' --plain' if opts.plain else ''}", summary)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    for name in ("clients", "channels", "procs", "ws_port", "api_port"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("rate", "seconds", "kill_after"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    ap.add_argument("--plain", action="store_true", help="clients without the resume extension")
    ap.add_argument("--suffix", default="", help="appended to the result file name")
    opts = Options(**vars(ap.parse_args(argv)))
    raise_nofile()
    target = clarion_preset(opts.ws_port, opts.api_port)
    target.start(Path("/tmp") / "clarion-bench-logs" / f"resume-{int(time.time())}")
    try:
        summary = asyncio.run(run(opts, target))
    finally:
        target.stop()
    for key, value in summary.items():
        print(f"{key:>40}: {value}")
    print(f"written to {_write(summary, opts)}")


if __name__ == "__main__":
    main()
