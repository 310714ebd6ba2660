"""Redis instructions per call of the accept script (gateway/state/history.py), counted by
valgrind's callgrind in a redis-server of its own: a figure that the load of a shared machine
does not move, unlike CPU time.

    .venv/bin/python -m bench.accept_script_cost                  # batches of 10 and single events
    .venv/bin/python -m bench.accept_script_cost --events 10 --appendonly no
    .venv/bin/python -m bench.accept_script_cost --script old.lua  # another version of the script

Each measurement starts redis-server under callgrind twice, runs ``--calls`` (and then
``--calls`` + 500) calls of ``History.accept_and_enqueue`` with events spread over 1,000
channels (as ``bench.run rest --rest-batch 10 --rest-channels 1000``), and reports the
difference over 500 calls, so start-up and shutdown cancel out. Needs ``valgrind`` on PATH; a
run takes a minute or two.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from gateway.api.deliver_message import DeliverMessage
from gateway.embedded_redis import find_redis_server, free_port
from gateway.state.history import ACCEPT_LUA, History
from gateway.state.keys import Keys

MORE = 500
PREFIX = "cost:"


def _instructions(lua: str, events: int, calls: int, appendonly: str) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="clarion-accept-cost-") as tmp:
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
             find_redis_server(), "--port", str(port), "--dir", tmp, "--save", "",
             "--appendonly", appendonly, "--appendfsync", "everysec",
             # Fewer timer ticks: their work grows with wall time, not with calls.
             "--hz", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(port=port)
        try:
            _wait(client)
            _accept(client, lua, events, calls)
            try:
                client.execute_command("SHUTDOWN", "NOSAVE")
            except redis.exceptions.ConnectionError:
                pass  # the connection closes as the server goes
            report = server.communicate(timeout=120)[1].decode()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    found = re.search(r"Collected : (\d+)", report)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{report[-2000:]}")
    return int(found.group(1))


def _wait(client: redis.Redis, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _accept(client: redis.Redis, lua: str, events: int, calls: int) -> None:
    keys, message = Keys(PREFIX), DeliverMessage(PREFIX)
    history = History(client, keys, max_events=100, retention=600)
    history._accept = client.register_script(lua)
    for i in range(calls):
        batch = [(f"c{(i * events + j) % 1000}", "e", "x" * 20, None) for j in range(events)]
        pieces = message.pieces("1", batch)
        history.accept_and_enqueue("1", batch, message.queue_key, pieces.head, pieces.body,
                                   pieces.tail)
        if i % 200 == 199:  # no worker drains the queue here
            client.delete(message.queue_key, keys.live_pending, keys.live_armed)


def per_call(lua: str, events: int, calls: int, appendonly: str) -> int:
    """Redis instructions per accept script call of ``events`` events."""
    few = _instructions(lua, events, calls, appendonly)
    more = _instructions(lua, events, calls + MORE, appendonly)
    return (more - few) // MORE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, action="append",
                        help="events per call (repeatable; default: 10 and 1)")
    parser.add_argument("--calls", type=int, default=100, help="calls before the counted ones")
    parser.add_argument("--appendonly", choices=["yes", "no"], default="yes",
                        help="the append-only file, as clarion up runs Redis (yes)")
    parser.add_argument("--script", type=Path, help="a Lua file instead of ACCEPT_LUA")
    args = parser.parse_args()
    lua = args.script.read_text() if args.script else ACCEPT_LUA
    for events in args.events or [10, 1]:
        count = per_call(lua, events, args.calls, args.appendonly)
        print(f"{events} event(s) per call, appendonly {args.appendonly}: "
              f"{count:,} Redis instructions per call")


if __name__ == "__main__":
    main()
