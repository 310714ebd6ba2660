"""Cheap Pusher subscribers: raw asyncio Protocols, one client process holds thousands.

Each subscriber does the HTTP upgrade itself, answers ``pusher:connection_established`` with a
``pusher:subscribe``, and then reads only WebSocket frame headers. In a text frame it looks for
the bench event by byte search (no JSON decoding) and takes the lane, sequence number and send
timestamp out of ``data``; anything else (protocol events, warm-up events) takes the slow path.

``ClientProcess`` is the body of one client process, driven over a multiprocessing Pipe by
``clients.ClientPool`` with small commands: open, arm, wait, close.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from array import array

from bench.events import DATA_MARK, EVENT_MARK, MAX_LANES
from bench.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    PING_EVENT,
    PONG_EVENT,
    Endpoint,
    masked_frame,
    subscribe_frame,
    upgrade_request,
)
from gateway.protocol.signatures import auth_token, user_string

NEVER = 1 << 62
DATA_SKIP = len(DATA_MARK)


class Hub:
    """Counters shared by every subscriber of one client process."""

    def __init__(self) -> None:
        self.expected = NEVER          # bench events each subscriber should get
        self.record_latency = False
        self.latencies = array("q")    # ns, one per delivery when recording
        self.done = 0                  # subscribers that got `expected` events
        self.all_done: asyncio.Event | None = None
        self.total = 0                 # subscribers that must reach `expected`
        self.first_ns = 0
        self.last_ns = 0
        self.other_frames = 0
        self.bad_frames = 0
        self.reads = 0                 # data_received calls while armed (frames/read)
        self.closed = 0
        self.errors: list[str] = []

    def reset(self, expected: int, record_latency: bool, total: int) -> None:
        self.expected, self.record_latency, self.total = expected, record_latency, total
        self.latencies = array("q")
        self.done = 0
        self.all_done = asyncio.Event()
        self.first_ns = self.last_ns = 0
        self.other_frames = self.bad_frames = self.reads = 0

    def subscriber_done(self) -> None:
        self.done += 1
        if self.done >= self.total and self.all_done is not None:
            self.all_done.set()

    def note_error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text[:300])


class Subscriber(asyncio.Protocol):
    __slots__ = ("hub", "channel", "request", "ready", "signin", "transport", "buf", "is_open",
                 "received", "out_of_order", "last", "trace")

    def __init__(self, hub: Hub, request: bytes, channel: str | None,
                 ready: asyncio.Future, signin: SignIn | None = None) -> None:
        self.hub, self.request, self.channel, self.ready = hub, request, channel, ready
        self.signin = signin
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.is_open = False
        self.trace: array | None = None   # (lane, seq) pairs, kept for one subscriber only
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.out_of_order = 0
        self.last = [-1] * MAX_LANES
        if self.trace is not None:
            self.trace = array("q")

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.hub.closed += 1
        self._fail(f"connection lost: {exc!r}")

    def data_received(self, data: bytes) -> None:
        if not self.is_open:
            data = self._handshake(data)
            if not data:
                return
        buf = self.buf + data if self.buf else data
        self.buf = b""
        hub = self.hub
        hub.reads += 1
        now = time.monotonic_ns()
        n = len(buf)
        o = 0
        got = 0
        while n - o >= 2:
            b0 = buf[o]
            size = buf[o + 1] & 0x7F
            start = o + 2
            if size == 126:
                if n - o < 4:
                    break
                size = int.from_bytes(buf[o + 2:o + 4], "big")
                start = o + 4
            elif size == 127:
                if n - o < 10:
                    break
                size = int.from_bytes(buf[o + 2:o + 10], "big")
                start = o + 10
            end = start + size
            if end > n:
                break
            o = end
            if b0 != 0x81:
                self._control(b0, buf[start:end])
                continue
            i = buf.find(DATA_MARK, start, end)
            if i < 0 or buf.find(EVENT_MARK, start, end) < 0:
                self._protocol_event(buf[start:end])
                continue
            i += DATA_SKIP
            lane, seq, sent = buf[i:buf.find(b'"', i, end)].split(b":", 3)[:3]
            lane = int(lane)
            seq = int(seq)
            if seq > self.last[lane]:
                self.last[lane] = seq
            else:
                self.out_of_order += 1
            if self.trace is not None:
                self.trace.append(lane)
                self.trace.append(seq)
            if hub.record_latency:
                hub.latencies.append(now - int(sent))
            got += 1
            self.received += 1
            if self.received == hub.expected:
                hub.subscriber_done()
        if o < n:
            self.buf = buf[o:]
        if got:
            hub.last_ns = now
            if not hub.first_ns:
                hub.first_ns = now

    # ------------------------------------------------------------------ slow paths

    def _handshake(self, data: bytes) -> bytes:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.buf[:end], self.buf[end + 4:]
        self.buf = b""
        if not head.startswith(b"HTTP/1.1 101"):
            self._fail(f"upgrade refused: {head[:120]!r}")
            self.transport.close()
            return b""
        self.is_open = True
        return rest

    def _control(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self.transport.write(masked_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.hub.note_error(f"server closed the connection: {code} {payload[2:80]!r}")
            self.transport.close()
        elif opcode != OP_PONG:
            self.hub.bad_frames += 1  # fragments or binary frames: not expected here

    def _protocol_event(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            event = message.get("event")
        except (ValueError, AttributeError):
            self.hub.bad_frames += 1
            return
        if event == "pusher:connection_established":
            if self.signin:
                socket_id = json.loads(message["data"])["socket_id"]
                self.transport.write(self.signin.frame(socket_id))
            if self.channel:
                self.transport.write(subscribe_frame(self.channel))
            else:
                self._succeed()
        elif event == "pusher_internal:subscription_succeeded":
            self._succeed()
        elif event == "pusher:ping":
            self.transport.write(masked_frame(PONG_EVENT))
        elif event == "pusher:subscription_error":
            self.hub.note_error(payload.decode(errors="replace"))
            self._fail(f"{event}: {message.get('data')}")
        elif event == "pusher:error":  # fatal ones are followed by a close frame
            self.hub.note_error(payload.decode(errors="replace"))
        else:
            self.hub.other_frames += 1

    def _succeed(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))


class SignIn:
    """``pusher:signin`` as a server SDK would authorise it (user id ``bench-<pid>-<n>``)."""

    counter = 0

    def __init__(self, key: str, secret: str) -> None:
        self.key, self.secret = key, secret

    def frame(self, socket_id: str) -> bytes:
        SignIn.counter += 1
        user_data = json.dumps({"id": f"bench-{os.getpid()}-{SignIn.counter}"})
        auth = auth_token(self.key, self.secret, user_string(socket_id, user_data))
        data = {"event": "pusher:signin", "data": {"user_data": user_data, "auth": auth}}
        return masked_frame(json.dumps(data).encode())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Loopback source addresses the subscribers take turns on: one source address has about 28,000
# ephemeral ports towards one server port (net.ipv4.ip_local_port_range), too few for the
# capacity run's 100,000 connections.
LOOPBACK_SOURCES = 8


def source_address(host: str, n: int) -> tuple[str, int] | None:
    """Subscriber ``n``'s local address towards ``host`` (None: the kernel's choice)."""
    if host != "127.0.0.1":
        return None
    return (f"127.0.0.{1 + n % LOOPBACK_SOURCES}", 0)


class ClientProcess:
    """One client process: holds subscribers and answers the pool's commands."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.hub = Hub()
        self.subs: list[Subscriber] = []
        self.keepalive: asyncio.Task | None = None
        self.throttle: asyncio.Task | None = None

    async def _keepalive(self, every_s: float = 20.0) -> None:
        """A client ``pusher:ping`` now and then, as pusher-js does on a quiet connection."""
        while True:
            await asyncio.sleep(every_s)
            for sub in self.subs:
                if not sub.transport.is_closing():
                    sub.transport.write(masked_frame(PING_EVENT))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            cmd, kwargs = await loop.run_in_executor(None, self.conn.recv)
            try:
                result = await getattr(self, f"do_{cmd}")(**kwargs)
            except Exception as exc:  # reported to the coordinator, which raises
                result = {"error": f"{cmd}: {exc!r}"}
            self.conn.send(result)
            if cmd == "close":
                return

    async def do_open(self, host: str, port: int, path: str, channel: str | None, count: int,
                      inflight: int, timeout: float, signin: tuple[str, str] | None,
                      first: int = 0, own_channels: bool = False,
                      ping_s: float = 20.0) -> dict:
        """``count`` subscribers on ``channel``; with ``own_channels``, subscriber number n
        (``first``, ``first + 1``, ... across the pool) on its own ``f"{channel}-{n}"``."""
        loop = asyncio.get_running_loop()
        endpoint = Endpoint(host, port, path)
        signer = SignIn(*signin) if signin else None
        if self.keepalive is None:
            self.keepalive = asyncio.create_task(self._keepalive(ping_s))
        gate = asyncio.Semaphore(inflight)
        failures: list[str] = []

        async def open_one(n: int) -> None:
            name = f"{channel}-{n}" if own_channels else channel
            async with gate:
                ready = loop.create_future()
                request = upgrade_request(endpoint)
                try:
                    _, sub = await loop.create_connection(
                        lambda: Subscriber(self.hub, request, name, ready, signer), host, port,
                        local_addr=source_address(host, n))
                    await asyncio.wait_for(ready, timeout)
                    self.subs.append(sub)
                except Exception as exc:
                    failures.append(repr(exc)[:200])

        started = time.perf_counter()
        await asyncio.gather(*(open_one(first + i) for i in range(count)))
        if self.subs:
            self.subs[0].trace = array("q")
        return {"opened": len(self.subs), "failed": len(failures), "failures": failures[:3],
                "seconds": time.perf_counter() - started}

    async def do_count(self) -> dict:
        """How many of this process's subscribers are still connected."""
        return {"open": sum(not s.transport.is_closing() for s in self.subs),
                "opened": len(self.subs)}

    async def do_arm(self, expected: int, record_latency: bool, read_pause_ms: float) -> dict:
        live = [s for s in self.subs if not s.transport.is_closing()]
        self.hub.reset(expected, record_latency, len(live))
        for sub in self.subs:
            sub.reset()
        if read_pause_ms > 0:
            self.throttle = asyncio.create_task(self._pause_reads(read_pause_ms / 1000))
        return {"cpu_s": cpu_seconds()}

    async def _pause_reads(self, pause_s: float) -> None:
        """Block the loop between iterations so frames pile up in the socket buffers and
        each read takes many: far fewer syscalls per delivery when a server writes one frame
        per send. Arrival times get up to pause_s late; only for throughput runs."""
        while True:
            time.sleep(pause_s)
            await asyncio.sleep(0)

    async def do_wait(self, idle_s: float, max_s: float) -> dict:
        """Until every subscriber has everything, nothing arrived for idle_s, or max_s."""
        hub = self.hub
        started = time.monotonic_ns()
        deadline = started + int(max_s * 1e9)
        while not hub.all_done.is_set():
            now = time.monotonic_ns()
            quiet_since = max(hub.last_ns, started)
            if now > deadline or now - quiet_since > idle_s * 1e9:
                break
            try:
                await asyncio.wait_for(hub.all_done.wait(), 0.1)
            except TimeoutError:
                pass
        if self.throttle:
            self.throttle.cancel()
            self.throttle = None
        return self._stats()

    def _stats(self) -> dict:
        hub = self.hub
        expected = hub.expected
        return {
            "subscribers": len(self.subs),
            "complete": sum(1 for s in self.subs if s.received >= expected),
            "received": sum(s.received for s in self.subs),
            "missing": sum(max(0, expected - s.received) for s in self.subs),
            "out_of_order": sum(s.out_of_order for s in self.subs),
            "first_ns": hub.first_ns,
            "last_ns": hub.last_ns,
            "latencies": hub.latencies.tobytes(),
            "other_frames": hub.other_frames,
            "bad_frames": hub.bad_frames,
            "reads": hub.reads,
            "trace": self.subs[0].trace.tobytes() if self.subs else b"",
            "trace_channel": self.subs[0].channel if self.subs else "",
            "closed": hub.closed,
            "errors": hub.errors,
            "cpu_s": cpu_seconds(),
        }

    async def do_cpu(self) -> dict:
        return {"cpu_s": cpu_seconds()}

    async def do_close(self) -> dict:
        if self.keepalive:
            self.keepalive.cancel()
        for sub in self.subs:
            sub.transport.abort()
        self.subs.clear()
        await asyncio.sleep(0)
        return {}


def process_main(conn) -> None:
    """Entry point of a client process (multiprocessing target)."""
    raise_nofile()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(ClientProcess(conn).serve())
