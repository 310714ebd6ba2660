"""The drain of a node on SIGTERM (docs/operations.md, "Draining a node"): `run_node` in a
subprocess, real clients; /ready answers 503, new connections are refused with 4100, the
clients are told 4200 over websocket.drain_spread, and the node exits 0 within its deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from test_ws_lifecycle import RUN_NODE, ready
from ws_harness import Closed, PusherClient, make_settings, wait_until

from config import settings_to_env
from gateway.processes import Child

CLIENTS = 20


@pytest.fixture
def run_node(redis_url: str, key_prefix: str):
    """``start(**websocket settings)``: a node process, and its port once it is ready."""
    procs: list[subprocess.Popen] = []

    def start(**ws) -> tuple[subprocess.Popen, int]:
        settings = make_settings(redis_url, key_prefix, **ws)
        proc = subprocess.Popen([sys.executable, "-c", RUN_NODE],
                                env={**os.environ, **settings_to_env(settings)})
        procs.append(proc)
        port = settings.websocket.port
        wait_until(lambda: ready(port), timeout=15)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ready_code(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def connected(port: int, count: int) -> list[PusherClient]:
    clients = [PusherClient(f"ws://127.0.0.1:{port}") for _ in range(count)]
    for c in clients:
        c.established()
    return clients


def close_times(clients: list[PusherClient]) -> list[tuple[int | None, float]]:
    """Each client's close code and when (monotonic) it came, read in parallel."""
    def one(c: PusherClient) -> tuple[int | None, float]:
        code = c.closed(timeout=20).code
        return code, time.monotonic()

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(one, clients))


def test_sigterm_drains_with_4200s_spread_and_503_on_ready(run_node):
    proc, port = run_node(drain_spread=1.0, shutdown_grace=1.0, drain_timeout=10.0)
    clients = connected(port, CLIENTS)
    with ThreadPoolExecutor(1) as pool:
        closes = pool.submit(close_times, clients)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The listener stays open while the node drains: the load balancer reads 503 ...
        assert wait_until(lambda: ready_code(port) == 503,
                          timeout=1)
        # ... and a client that still comes is refused with a code that makes pusher-js
        # wait a second (4100-4199), not one it would retry at once.
        late = PusherClient(f"ws://127.0.0.1:{port}")
        assert late.recv()["data"]["code"] == 4100
        assert late.closed().code == 4100
        got = closes.result(30)
    assert proc.wait(10) == 0
    exited = time.monotonic() - signalled
    codes, times = zip(*got, strict=True)
    assert set(codes) == {4200}
    # Spread over the second, not all in one burst: the first half before the last half.
    offsets = sorted(t - signalled for t in times)
    assert offsets[0] < 0.5 and offsets[-1] > 0.6, offsets
    assert exited < 1.0 + 1.0 + 3.0, exited  # spread, grace, and the rest of the shutdown


def test_the_deadline_cuts_a_long_spread_short(run_node):
    # A spread far longer than the deadline: every client is still told, by the deadline,
    # and the node exits soon after it rather than after the spread.
    proc, port = run_node(drain_spread=60.0, shutdown_grace=30.0, drain_timeout=1.0)
    clients = connected(port, CLIENTS)
    with ThreadPoolExecutor(1) as pool:
        closes = pool.submit(close_times, clients)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        got = closes.result(30)
    assert proc.wait(10) == 0
    exited = time.monotonic() - signalled
    assert {code for code, _ in got} == {4200}
    assert max(t for _, t in got) - signalled < 2.0
    assert exited < 1.0 + 3.0, exited


def test_the_notice_leaves_the_balancer_time_before_the_4200s(run_node):
    # For drain_notice the node only answers 503 (and 4100 to newcomers): a balancer's health
    # check takes it out before any of its clients is told to reconnect.
    proc, port = run_node(drain_notice=0.8, drain_spread=0.2, drain_timeout=10.0)
    clients = connected(port, CLIENTS)
    with ThreadPoolExecutor(1) as pool:
        closes = pool.submit(close_times, clients)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_until(lambda: ready_code(port) == 503, timeout=0.5)
        got = closes.result(30)
    assert proc.wait(10) == 0
    offsets = sorted(t - signalled for _, t in got)
    assert {code for code, _ in got} == {4200}
    assert offsets[0] >= 0.8 and offsets[-1] < 0.8 + 0.2 + 1.0, offsets


def close_code_within(client: PusherClient, timeout: float) -> int | None:
    """The close code if the server closes ``client`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            client.recv(max(0.01, deadline - time.monotonic()))
    except Closed as exc:
        return exc.code
    except TimeoutError:
        return None


def listening(parent: int, port: int) -> set[int]:
    """The children of ``parent`` listening on ``port``."""
    pids = set()
    for child in psutil.Process(parent).children():
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in child.net_connections("tcp")):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def test_one_process_of_several_on_a_port_drains_and_is_started_again(
        redis_url: str, key_prefix: str, tmp_path):
    # `clarion ws --processes 2`: the processes share the port (SO_REUSEPORT). One of them
    # SIGTERMed tells its clients 4200 and closes its share of the port at once; they
    # reconnect to the same port, which its sibling serves; the supervisor starts it again.
    settings = make_settings(redis_url, key_prefix, drain_spread=0.3)
    port = settings.websocket.port
    parent = Child.cli("ws", settings, "ws", "--processes", "2",
                       log_path=tmp_path / "ws.log").start()
    try:
        wait_until(lambda: len(listening(parent.pid, port)) == 2, timeout=20)
        children = listening(parent.pid, port)
        clients = connected(port, CLIENTS)
        victim = min(children)
        os.kill(victim, signal.SIGTERM)
        with ThreadPoolExecutor(len(clients)) as pool:
            codes = list(pool.map(lambda c: close_code_within(c, 5.0), clients))
        assert set(codes) <= {4200, None} and 4200 in codes, codes
        for _ in range(codes.count(4200)):  # what pusher-js does on 4200: at once, same port
            connected(port, 1)[0].close()
        wait_until(lambda: len(listening(parent.pid, port) - {victim}) == 2, timeout=20)
        assert "exited with code 0" in (tmp_path / "ws.log").read_text()
    finally:
        parent.stop(20)
