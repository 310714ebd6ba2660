"""Each app's debug log: a capped Redis stream, written only while somebody watches the app.

Keys (``P`` = ``settings.redis.key_prefix``, listed in gateway/state/keys.py):

- ``P dbg:{app}``: stream of entries, trimmed to about ``dashboard.log_max_entries``
  (``XADD MAXLEN ~``). Fields: ``k`` kind, ``s`` source (``api``, a node id, ``worker``),
  ``d`` JSON details. The entry id is its time, so no timestamp is stored.
- ``P dbg:watch``: zset, app id -> unix ms until which it is watched. The console's poll
  renews its app (``dashboard.watch_ttl``).

The cost when nobody watches is a set lookup per event: each process reads the watched apps at
most once a second (one ZRANGEBYSCORE for all apps), never per publish or per frame. When
somebody watches, an entry is appended to a buffer that a thread (a task in the node) writes
every 0.2 s in one pipeline (bench figures in docs/dashboard.md). Writing is best effort: a
Redis error loses log entries, never fails the publish, connection or delivery being logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
import redis

log = logging.getLogger("clarion.dashboard.debuglog")

# How often a process re-reads which apps are watched: an opened console starts seeing
# entries within this long.
REFRESH_SECONDS = 1.0
# Buffered entries are written this often (one pipeline for all apps).
FLUSH_SECONDS = NODE_FLUSH_SECONDS = 0.2
# An entry's details are cut to this many bytes of JSON: the log shows, it does not archive.
MAX_DETAIL_BYTES = 2048

Entry = tuple[str, str, dict[str, Any]]  # (app id, kind, details)


def log_key(prefix: str, app_id: str) -> str:
    return f"{prefix}dbg:{app_id}"


def watch_key(prefix: str) -> str:
    return f"{prefix}dbg:watch"


def encode(source: str, kind: str, details: dict[str, Any]) -> dict[str, bytes | str]:
    body = orjson.dumps(details)
    if len(body) > MAX_DETAIL_BYTES:
        body = orjson.dumps({**{k: v for k, v in details.items() if k != "data"},
                             "data": "(cut: too long to show)"})
    return {"k": kind, "s": source, "d": body}


def decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return {
        "id": eid, "at_ms": int(eid.partition("-")[0]), "kind": fields[b"k"].decode(),
        "source": fields[b"s"].decode(), **orjson.loads(fields.get(b"d", b"{}")),
    }


def watch(client: redis.Redis, prefix: str, app_id: str, ttl: float) -> None:
    """Mark ``app_id`` watched for ``ttl`` seconds (and forget apps nobody watches)."""
    now = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(watch_key(prefix), {app_id: now + int(ttl * 1000)})
    pipe.zremrangebyscore(watch_key(prefix), "-inf", now)
    pipe.execute()


def read(client: redis.Redis, prefix: str, app_id: str, after: str | None,
         limit: int) -> list[dict[str, Any]]:
    """Entries newer than ``after`` (an entry id), newest first; the latest ``limit``."""
    low = f"({after}" if after else "-"
    rows = client.xrevrange(log_key(prefix, app_id), "+", low, count=limit)
    return [decode(eid, fields) for eid, fields in rows]


def _watched_now(members: Iterable[bytes | str]) -> frozenset[str]:
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)


class DebugLog:
    """For the API and the workers (synchronous Redis client, any thread): ``write`` only
    buffers; a daemon thread of the process writes the buffer every FLUSH_SECONDS in one
    pipeline, so a watched publish pays a list append, not a Redis round trip. Entries still
    buffered when the process exits are lost: it is a debug log."""

    def __init__(self, client: redis.Redis, prefix: str, max_entries: int, source: str) -> None:
        self.client = client
        self.prefix = prefix
        self.max_entries = max_entries
        self.source = source
        self._watched: frozenset[str] = frozenset()
        self._next_read = 0.0
        self._lock = threading.Lock()
        self._buffer: list[Entry] = []
        self._buffer_lock = threading.Lock()
        self._flusher_pid = 0

    def watching(self, app_id: str) -> bool:
        if time.monotonic() >= self._next_read:
            self._refresh()
        return app_id in self._watched

    def _refresh(self) -> None:
        # One thread reads, the others keep the previous answer meanwhile.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._next_read = time.monotonic() + REFRESH_SECONDS
            now = int(time.time() * 1000)
            self._watched = _watched_now(
                self.client.zrangebyscore(watch_key(self.prefix), now, "+inf"))
        except redis.RedisError as exc:
            log.debug("watched apps not read: %s", exc)
        finally:
            self._lock.release()

    def note(self, app_id: str, kind: str, **details: Any) -> None:
        if self.watching(app_id):
            self.write([(app_id, kind, details)])

    def write(self, entries: list[Entry]) -> None:
        with self._buffer_lock:
            # Bounded while Redis is slow: past a stream's worth, entries are dropped.
            room = self.max_entries - len(self._buffer)
            if room > 0:
                self._buffer.extend(entries[:room])
        if self._flusher_pid != os.getpid():  # first write, or a forked child's
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
            threading.Thread(target=self._flush_loop, name="debuglog", daemon=True).start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self._buffer_lock:
            entries, self._buffer = self._buffer, []
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for app_id, kind, details in entries:
            pipe.xadd(log_key(self.prefix, app_id), encode(self.source, kind, details),
                      maxlen=self.max_entries, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("debug log entries lost: %s", exc)


class NodeDebugLog:
    """For the WebSocket node (asyncio client): ``note`` only buffers; :meth:`run` writes the
    buffer every NODE_FLUSH_SECONDS and re-reads the watched apps every REFRESH_SECONDS."""

    def __init__(self, client: Any, prefix: str, max_entries: int, source: str) -> None:
        self.client = client
        self.prefix = prefix
        self.max_entries = max_entries
        self.source = source
        self.watched: frozenset[str] = frozenset()
        self._buffer: list[Entry] = []
        self._stopped = asyncio.Event()

    def note(self, app_id: str, kind: str, **details: Any) -> None:
        # Bounded while Redis is slow: past a stream's worth, entries are dropped.
        if app_id in self.watched and len(self._buffer) < self.max_entries:
            self._buffer.append((app_id, kind, details))

    async def run(self) -> None:
        next_read = 0.0
        while not self._stopped.is_set():
            try:
                if time.monotonic() >= next_read:
                    next_read = time.monotonic() + REFRESH_SECONDS
                    now = int(time.time() * 1000)
                    self.watched = _watched_now(
                        await self.client.zrangebyscore(watch_key(self.prefix), now, "+inf"))
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: entries are lost, the node goes on
                self._buffer.clear()
                log.debug("debug log not written: %s", exc)
            try:
                await asyncio.wait_for(self._stopped.wait(), NODE_FLUSH_SECONDS)
            except TimeoutError:
                pass

    async def flush(self) -> None:
        if not self._buffer:
            return
        entries, self._buffer = self._buffer, []
        pipe = self.client.pipeline(transaction=False)
        for app_id, kind, details in entries:
            pipe.xadd(log_key(self.prefix, app_id), encode(self.source, kind, details),
                      maxlen=self.max_entries, approximate=True)
        await pipe.execute()

    def stop(self) -> None:
        self._stopped.set()
