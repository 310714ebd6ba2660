"""What the debug log adds to one publish in the API process (docs/dashboard.md), against a
real redis-server on loopback:

    .venv/bin/python -m bench.dashboard_cost [--calls 200000]

- unwatched: ``DebugLog.watching(app)`` as the publish path calls it (a clock read and a set
  lookup; one ZRANGEBYSCORE a second, amortised);
- watched: ``watching`` plus buffering one entry, on the publish path; and, in the flusher
  thread, the pipelined ``XADD MAXLEN ~`` per entry.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import redis

from gateway.dashboard import debuglog
from gateway.embedded_redis import EmbeddedRedis


def per_call_us(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(tmp).start()
        try:
            client = redis.Redis.from_url(server.url)
            log = debuglog.DebugLog(client, "bench:", 1000, "api")
            unwatched = per_call_us(lambda: log.watching("1"), args.calls)
            debuglog.watch(client, "bench:", "1", 600)
            log._next_read = 0.0  # read the watched set now, not in a second
            details = {"channel": "bench", "event": "e", "bytes": 20, "serial": 1,
                       "via": "rest", "data": '{"n": 1}'}

            def watched_publish() -> None:
                if log.watching("1"):
                    log.write([("1", "api_event", details)])

            batch = 200  # about what 0.2 s of a busy app buffers
            rounds = max(args.calls // 200, 50)
            append = flush = 0.0
            for _ in range(rounds):
                log._flusher_pid = os.getpid()  # no flusher thread: flushes timed below
                started = time.perf_counter()
                for _ in range(batch):
                    watched_publish()
                append += time.perf_counter() - started
                started = time.perf_counter()
                log.flush()
                flush += time.perf_counter() - started
            n = rounds * batch
            print(f"unwatched: {unwatched:.3f} us per publish ({args.calls} calls)")
            print(f"watched:   {append / n * 1e6:.2f} us per publish (buffered), "
                  f"{flush / n * 1e6:.1f} us per entry in the flusher thread "
                  f"(pipelines of {batch} XADD MAXLEN ~)")
            print(f"stream length after the run: {client.xlen(debuglog.log_key('bench:', '1'))}"
                  " (cap 1000, trimmed approximately)")
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
