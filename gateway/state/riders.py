"""Requests riding on a ``clarion.live.deliver`` task (keys ``lv:*`` in keys.py).

The accept script (history.py) queues a request's task only when no task holds ``lv:armed``;
otherwise it appends the request's task body to ``lv:pending``. The task holding the armed key
publishes its own events, then waits a few milliseconds for a rider (BLPOP), takes every rider
waiting (LPOP), publishes them, and waits again, until a wait finds nothing: the take then
deletes the armed key in the same script, so the next request queues a task of its own. A task
that has run for its time budget releases the key instead and, if riders are still waiting,
the caller queues a successor.

Riders are doorbells like the task itself: a rider taken by a worker that dies before it
publishes is gone, and its events reach subscribers anyway, because every node compares its
channels with their logs (gateway/ws/node.py, reconcile) and fills what it lacks. While a task
runs it renews the armed key as a short lease, so a dead task holds later requests on the
pending list for at most ``LEASE_MS`` before one of them queues a new task.

Under load this turns many requests into one Celery task (the worker's per-task cost, about
1 ms of CPU, was a third of the server's cost per request); at a trickle every request still
has its own task and nothing waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.state.history import ARMED_MS
from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# How long the armed key outlives the last sign of life of the task running with it.
LEASE_MS = 1000
# Riders taken in one step at most (one LPOP): bounds the worker's memory per round.
TAKE_MAX = 1000

# KEYS: armed, pending. ARGV: lease ms, most to take, "1" to release the armed key if nothing
# is waiting. Returns what was taken (oldest first).
TAKE_LUA = """
local taken = redis.call('LPOP', KEYS[2], ARGV[2])
if not taken then
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
  end
  return {}
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return taken
"""

# KEYS: armed, pending. ARGV: armed ms. Returns 1 if riders are waiting (the armed key is then
# kept for the successor the caller queues), else deletes the armed key and returns 0.
RELEASE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""

Rider = tuple[str, list[list[Any]]]


class Riders:
    """The pending list as the live task sees it (synchronous client)."""

    def __init__(self, redis: Any, keys: Keys, app_id: str) -> None:
        self.redis = redis
        # The task's app: its riders on Redis Cluster, everyone's otherwise (keys.py).
        self.armed = keys.live_armed_of(app_id)
        self.pending = keys.live_pending_of(app_id)
        self._take = register_script(redis, TAKE_LUA)
        self._release = register_script(redis, RELEASE_LUA)

    def _keys(self) -> list[str]:
        return [self.armed, self.pending]

    def take_in(self, pipe: Any) -> None:
        """Queue a take on ``pipe`` (by the script's sha alone: a Script on a pipeline costs a
        SCRIPT EXISTS round trip per execute). Pass the pipeline's last result to
        :meth:`taken`."""
        pipe.evalsha(self._take.sha, 2, *self._keys(), LEASE_MS, TAKE_MAX, 0)

    def taken(self, result: Any) -> list[bytes]:
        """What ``take_in`` took, given its result; the take is made again, loading the
        script, if Redis did not know it (a restarted Redis has an empty script cache)."""
        if isinstance(result, NoScriptError):
            return self._take(keys=self._keys(), args=[LEASE_MS, TAKE_MAX, 0])  # type: ignore[no-any-return]
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]

    def wait_and_take(self, linger: float) -> list[bytes]:
        """Wait up to ``linger`` seconds for a rider (returned at once: the take that follows
        its publish, in the same round trip, picks up the others). Nothing taken means the
        armed key was released in the same step as the last look."""
        if linger > 0:  # BLPOP's timeout 0 would block for good
            try:
                popped = self.redis.blpop([self.pending], linger)
            except ResponseError as exc:
                if not str(exc).startswith("UNBLOCKED"):
                    raise
                # The master was demoted under the wait (a failover): retried like any
                # lost connection.
                raise RedisConnectionError(str(exc)) from exc
            if popped is not None:
                return [popped[1]]
        return self._take(keys=self._keys(), args=[LEASE_MS, TAKE_MAX, 1])  # type: ignore[no-any-return]

    def release(self) -> bool:
        """Give up the armed key; True if riders are waiting and need a successor task."""
        return bool(self._release(keys=self._keys(), args=[ARMED_MS]))


def decode(bodies: list[bytes]) -> Iterator[Rider]:
    """(app id, events) of each taken task body (JSON-escaped, as it sits in a message)."""
    for body in bodies:
        args = orjson.loads(orjson.loads(b'"' + body + b'"'))[0]
        yield args[0], args[1]
