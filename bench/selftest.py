"""Offline checks of the client's framing and counting (no server): python -m bench.selftest"""

from __future__ import annotations

import asyncio
import json
import random
import time

from bench.events import event_data
from bench.publisher import Response
from bench.scenarios import publish_round_robin, round_robin_batches
from bench.subscriber import Hub, SignIn, Subscriber
from bench.wsframes import masked_frame, unmask_for_test


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x80 | opcode, n]) + payload
    if n < 65536:
        return bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big") + payload


def bench_frame(lane: int, seq: int, padding: int = 0) -> bytes:
    body = {"event": "bench", "channel": "c", "data": event_data(lane, seq, padding)}
    return server_frame(json.dumps(body, separators=(",", ":")).encode())


def make_subscriber(expected: int, signin: SignIn | None = None) -> tuple[Subscriber, Hub]:
    loop = asyncio.new_event_loop()
    hub = Hub()
    sub = Subscriber(hub, b"", "c", loop.create_future(), signin)
    sub.transport = FakeTransport()
    hub.all_done = asyncio.Event()
    hub.reset(expected, True, 1)
    return sub, hub


def check_masking() -> None:
    for size in (0, 5, 125, 126, 300, 70000):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert unmask_for_test(masked_frame(payload)) == payload, size


def check_split_stream() -> None:
    sub, hub = make_subscriber(expected=6)
    sub.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    established = {"event": "pusher:connection_established",
                   "data": json.dumps({"socket_id": "1.2", "activity_timeout": 30})}
    stream = server_frame(json.dumps(established).encode())
    stream += b"".join(bench_frame(0, s) for s in (0, 1))
    stream += bench_frame(1, 0, padding=200)          # 16-bit length
    stream += server_frame(b"hi", opcode=0x9)         # ping in the middle
    stream += bench_frame(0, 3) + bench_frame(0, 2) + bench_frame(1, 1)  # 2 arrives late
    for i in range(0, len(stream), 7):                # worst case: 7-byte reads
        sub.data_received(stream[i:i + 7])
    assert sub.received == 6, sub.received
    assert sub.out_of_order == 1, sub.out_of_order
    assert hub.done == 1 and len(hub.latencies) == 6
    assert all(0 <= lat < 10e9 for lat in hub.latencies)
    sent = [unmask_for_test(frame) for frame in sub.transport.sent]
    assert b"pusher:subscribe" in sent[0] and sent[1] == b"hi", sent


def check_signin() -> None:
    sub, _ = make_subscriber(expected=1, signin=SignIn("app-key", "app-secret"))
    sub.is_open = True
    established = {"event": "pusher:connection_established",
                   "data": json.dumps({"socket_id": "123.456", "activity_timeout": 30})}
    sub.data_received(server_frame(json.dumps(established).encode()))
    signin = json.loads(unmask_for_test(sub.transport.sent[0]))
    assert signin["event"] == "pusher:signin"
    assert signin["data"]["auth"].startswith("app-key:")


class FakeLane:
    """A lane that answers at once, after a random number of loop turns (lanes interleave)."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.index, self.next_seq, self.rng = index, 0, rng
        self.sent: list[tuple[str, int]] = []

    async def batch_to(self, channels: list[str], padding: int = 0) -> Response:
        for name in channels:
            self.sent.append((name, self.next_seq))
            self.next_seq += 1
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)
        return Response(200, b"{}", 0.0)


def check_channel_order() -> None:
    """channels scenario: each channel gets its share, and per-lane seq order is per-channel
    publish order however the lanes interleave."""
    plan = round_robin_batches(25, 4, 10)
    assert all(len(set(request)) == len(request) for request in plan)
    assert sorted(i for request in plan for i in request) == sorted(list(range(25)) * 4)
    rng = random.Random(7)
    lanes = [FakeLane(i, rng) for i in range(3)]
    names = [f"c-{n}" for n in range(25)]
    stats, sent = asyncio.run(publish_round_robin(lanes, names, 4, 10, 0))
    assert stats.events == 100 and stats.failed == 0
    truth = {name: [] for name in names}
    for lane in lanes:
        for name, seq in lane.sent:
            truth[name].append((lane.index, seq))
    assert {k: sorted(v) for k, v in sent.items()} == {k: sorted(v) for k, v in truth.items()}
    for name in names:
        # the server may interleave lanes any way: here the highest lane first
        order = sorted(sent[name], key=lambda pair: -pair[0])
        sub, hub = make_subscriber(expected=4)
        sub.is_open = True
        sub.data_received(b"".join(bench_frame(lane, seq) for lane, seq in order))
        assert sub.received == 4 and sub.out_of_order == 0, (name, order)
    # 4 events over 3 lanes: some lane sent two to the channel; swapping them is caught
    pairs = sent[names[0]]
    one_lane = max(([p for p in pairs if p[0] == lane.index] for lane in lanes), key=len)
    sub, _ = make_subscriber(expected=2)
    sub.is_open = True
    sub.data_received(bench_frame(*one_lane[1]) + bench_frame(*one_lane[0]))
    assert sub.out_of_order == 1


def measure_parse_cost(frames: int = 100_000) -> float:
    sub, hub = make_subscriber(expected=frames)
    sub.is_open = True
    pairs = [bench_frame(0, s) + bench_frame(0, s + 1) for s in range(0, frames, 2)]
    started = time.perf_counter()
    for chunk in pairs:
        sub.data_received(chunk)
    return (time.perf_counter() - started) / frames * 1e6


def main() -> None:
    check_masking()
    check_split_stream()
    check_signin()
    check_channel_order()
    print(f"ok; client parse cost {measure_parse_cost():.2f} us/frame (2 frames per read)")


if __name__ == "__main__":
    main()
