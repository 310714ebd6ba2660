"""What an API process accepted last on each channel, so that a failover cannot hide a loss.

With asynchronous replication, the events a master accepted in its last moments may not have
reached the replica that replaces it. If no node had delivered them either, the new master's
chain of serials (gateway/state/history.py) links up from the last event it has to the next
one, and the loss would go unseen. So each API process remembers, for a few seconds, the
serial it gave each channel last; at a master switch (gateway/state/redis_client.py,
``FailoverWatch.before_resume``), before it writes anything to the new master, it puts every
channel counter the new master holds below that serial back up to it. The next event then
names the lost one as its predecessor, which no log has: every reader that had not seen it is
told (``history_gap``, ``clarion:resume_failed``), as after any lost log.

On Redis Cluster no announcement tells the API that a master was replaced, so the heads go
into every accept instead (``floors``): the script chains an event to the channel's head that
this process remembers when the counter it finds is below it (gateway/state/history.py).

A counter already moved on by another process (an event accepted on the new master first) is
left alone: that process's event linked up with what the new master had, so that gap stays
unseen. Each process repairs at the same announcement, before its own first write, so that
window is the time between two processes hearing the same sentinel (milliseconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import redis
import structlog

from gateway.state.history import SERIAL_TTL

log = structlog.get_logger("clarion.state.chain_heads")

# Heads older than this are forgotten: a replica lags by milliseconds, a failover takes seconds.
WINDOW = 30.0

# KEYS: serial keys; ARGV: the serial each should be at least, then the counters' TTL.
# Returns the keys that were behind (their channels lost events).
RESTORE_LUA = """
local out = {}
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current < tonumber(ARGV[i]) then
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[#ARGV])
    out[#out + 1] = KEYS[i]
  end
end
return out
"""


class ChainHeads:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._heads: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._pruned = time.monotonic()
        self.restored = 0  # channels whose lost head was put back (for tests and metrics)

    def note(self, serial_keys: Sequence[str], serials: Sequence[int]) -> None:
        """The accept script gave these channels (their serial keys) these serials."""
        now = time.monotonic()
        with self._lock:
            for key, serial in zip(serial_keys, serials, strict=True):
                self._heads[key] = (serial, now)
            if now - self._pruned > self.window:
                self._prune(now)

    def floors(self, serial_keys: Sequence[str]) -> list[int]:
        """The serial this process gave each channel last (0: none within the window)."""
        with self._lock:
            return [self._heads.get(key, (0, 0.0))[0] for key in serial_keys]

    def _prune(self, now: float) -> None:
        self._pruned = now
        self._heads = {k: v for k, v in self._heads.items() if now - v[1] <= self.window}

    def restore(self, client: redis.Redis) -> list[str]:
        """Put the new master's counters that are behind what this process accepted back up;
        the serial keys of the channels that lost events."""
        with self._lock:
            self._prune(time.monotonic())
            heads = [(k, s) for k, (s, _) in self._heads.items()]
        if not heads:
            return []
        behind = client.eval(RESTORE_LUA, len(heads), *(k for k, _ in heads),
                             *(s for _, s in heads), SERIAL_TTL)
        lost = [k.decode() if isinstance(k, bytes) else k for k in behind]
        self.restored += len(lost)
        if lost:
            log.warning("failover_lost_events", channels=len(lost), serial_keys=lost[:20])
        return lost
