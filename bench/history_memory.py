"""Redis memory of the channel logs and idempotency keys, measured with ``MEMORY USAGE``.

    .venv/bin/python -m bench.history_memory [--payload 100] [--cap 2000]

Starts a redis-server of its own (the one `clarion up` would use), appends events through
the real accept script (``History.accept``) to channels of growing length and reads
``MEMORY USAGE <key> SAMPLES 0`` (exact) of each log, its serial counter and an idempotency
key record. The figures back the settings table of docs/reliability.md.

A typical event here: name ``order-updated``, ``--payload`` bytes of JSON data, no excluded
socket id. A log is a sorted set: Redis keeps up to 128 members of at most 64 bytes as a
compact listpack and anything else as a skiplist plus a hash table (``zset-max-listpack-*``);
an event's member is ``"<serial> <prev> {"e":..,"d":..,"x":..}"``, over 64 bytes with any
real payload, so every log with a payload is a skiplist, whatever its length.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import redis

from gateway.embedded_redis import EmbeddedRedis
from gateway.state.history import History, entry_json
from gateway.state.idempotency import IdempotencyClaim
from gateway.state.keys import Keys

LENGTHS = (1, 10, 100, 1000, 2000)


def _payload(size: int) -> str:
    """JSON text of ``size`` bytes, like an app's event data."""
    head = '{"id":12345,"status":"shipped","note":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


def _usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def measure(client: redis.Redis, payload: int, cap: int) -> dict[str, object]:
    keys = Keys("mem:")
    history = History(client, keys, max_events=cap, retention=3600)
    data = _payload(payload)
    rows = []
    for length in sorted({*LENGTHS, cap}):
        channel = f"orders-{length}"
        for start in range(0, length, 100):
            batch = min(100, length - start)
            history.accept("1", [(channel, "order-updated", data, None)] * batch)
        log = _usage(client, keys.history("1", channel))
        counter = _usage(client, keys.serial("1", channel))
        rows.append({"events": length, "log_bytes": log, "counter_bytes": counter,
                     "bytes_per_event": round(log / length),
                     "encoding": client.object("encoding", keys.history("1", channel)).decode()})
    big, small = rows[-1], rows[0]
    marginal = (big["log_bytes"] - small["log_bytes"]) / (big["events"] - small["events"])
    claim = IdempotencyClaim(keys.idempotency("1", "3f2b8c0e-6d1a-4c57-9a7e-2f1f0b9d4c11"),
                             "0" * 32, b"{}", 300_000)
    history.accept("1", [("idem", "order-updated", data, None)], claim=claim)
    return {
        "redis_version": client.info("server")["redis_version"],
        "payload_bytes": len(data),
        "member_bytes": len(b"1796626917822580 1796626917822579 ")
        + len(entry_json("order-updated", data, None)),
        "rows": rows,
        "marginal_bytes_per_event": round(marginal),
        "idempotency_record_bytes": _usage(client, claim.key),
    }


def report(result: dict[str, object]) -> str:
    lines = [
        f"Redis {result['redis_version']}, {result['payload_bytes']}-byte payload, "
        f"{result['member_bytes']}-byte log member",
        "",
        "| events in the log | log (MEMORY USAGE) | per event | serial counter | encoding |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:  # type: ignore[attr-defined]
        lines.append(f"| {row['events']:,} | {row['log_bytes']:,} B | "
                     f"{row['bytes_per_event']:,} B | {row['counter_bytes']} B | "
                     f"{row['encoding']} |")
    lines += ["", f"each further event: {result['marginal_bytes_per_event']} B; "
                  f"an idempotency key record: {result['idempotency_record_bytes']} B"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload", type=int, default=100, help="event data bytes")
    parser.add_argument("--cap", type=int, default=2000, help="history.max_events")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-mem-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            client = redis.Redis.from_url(server.url)
            result = measure(client, args.payload, args.cap)
            client.close()
        finally:
            server.stop()
    print(json.dumps(result, indent=1) if args.json else report(result))


if __name__ == "__main__":
    main()
