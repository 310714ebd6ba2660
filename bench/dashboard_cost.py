"""What the debug log adds to one publish in the API process (docs/dashboard.md), against a
real redis-server on loopback:

    .venv/bin/python -m bench.dashboard_cost [--calls 200000]

- unwatched: ``DebugLog.watching(app)`` as the publish path calls it (a clock read and a set
  lookup; one ZRANGEBYSCORE a second, amortised);
- watched: ``watching`` plus writing one entry (one pipelined XADD MAXLEN ~ round trip).
"""

from __future__ import annotations

import argparse
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

            watched = per_call_us(watched_publish, max(args.calls // 20, 1000))
            print(f"unwatched: {unwatched:.3f} us per publish ({args.calls} calls)")
            print(f"watched:   {watched:.1f} us per publish (one XADD round trip)")
            print(f"stream length after the run: {client.xlen(debuglog.log_key('bench:', '1'))}"
                  " (cap 1000, trimmed approximately)")
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
