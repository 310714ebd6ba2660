"""Requests riding on a ``clarion.live.deliver`` task (keys ``lv:*`` in keys.py).

The accept script (history.py) queues a request's task only when no task holds ``lv:armed``;
otherwise it appends the request's task body to ``lv:pending``. The task holding the armed key
publishes its own events, then waits a few milliseconds for a rider (BLMOVE into
``lv:taken:{task id}``), takes every rider waiting in one step (the pending list renamed onto
the taken one), publishes them, deletes the taken list, and waits again, until a wait finds
nothing: the take then deletes the armed key in the same script, so the next request queues a
task of its own. A task that has run for its time budget releases the key instead and, if
riders are still waiting, the caller queues a successor.

A task redelivered after its worker died finds its taken list still there and publishes it
again; nodes drop the events they already delivered by serial.

Under load this turns many requests into one Celery task (the worker's per-task cost, about
1 ms of CPU, was a third of the server's cost per request); at a trickle every request still
has its own task and nothing waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from gateway.state.keys import Keys

# KEYS: armed, pending, taken (the task's own). ARGV: ttl seconds of the taken list, armed ms,
# "1" to release the armed key if nothing is waiting, "1" to delete the taken list first (it
# has just been published, earlier in the same pipeline).
TAKE_LUA = """
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    if ARGV[3] == '1' then
      redis.call('DEL', KEYS[1])
    end
    return {}
  end
  redis.call('RENAME', KEYS[2], KEYS[3])
else
  -- A rider moved in by the wait, or a redelivered task's leftovers: add those waiting.
  for _ = 1, 10000 do
    if not redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') then
      break
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('LRANGE', KEYS[3], 0, -1)
"""

# KEYS: armed, pending. Returns 1 if riders are waiting (the armed key is then kept for the
# successor the caller queues), else deletes the armed key and returns 0.
RELEASE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""

Rider = tuple[str, list[list[Any]]]


class Riders:
    """The pending list as the live task sees it (synchronous client)."""

    def __init__(self, redis: Any, keys: Keys, ttl: int, armed_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.armed_ms = armed_ms
        self._take = redis.register_script(TAKE_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    def _keys(self, task_id: str) -> list[str]:
        return [self.keys.live_armed, self.keys.live_pending, self.keys.live_taken(task_id)]

    def _args(self, release: bool, clear: bool) -> list[Any]:
        return [self.ttl, self.armed_ms, int(release), int(clear)]

    def take_in(self, pipe: Any, task_id: str, clear: bool) -> None:
        """Queue a take on ``pipe`` (by the script's sha alone: a Script on a pipeline costs a
        SCRIPT EXISTS round trip per execute); ``clear`` first deletes what the task took
        before. Pass the pipeline's last result to :meth:`taken`."""
        pipe.evalsha(self._take.sha, 3, *self._keys(task_id), *self._args(False, clear))

    def taken(self, result: Any, task_id: str, clear: bool) -> list[bytes]:
        """What ``take_in`` took, given its result; the take is made again, loading the
        script, if Redis did not know it (a restarted Redis has an empty script cache)."""
        if isinstance(result, NoScriptError):
            return self._take(  # type: ignore[no-any-return]
                keys=self._keys(task_id), args=self._args(False, clear))
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]

    def wait_and_take(self, task_id: str, linger: float) -> list[bytes]:
        """Wait up to ``linger`` seconds for a rider (moved onto the empty taken list, and
        returned at once: the next take, after it is published, picks up any others). Nothing
        taken means the armed key was released in the same step as the last look."""
        if linger > 0:  # BLMOVE's timeout 0 would block for good
            moved = self.redis.blmove(self.keys.live_pending, self.keys.live_taken(task_id),
                                      linger, "LEFT", "RIGHT")
            if moved is not None:
                return [moved]
        return self._take(  # type: ignore[no-any-return]
            keys=self._keys(task_id), args=self._args(True, False))

    def done_in(self, pipe: Any, task_id: str) -> None:
        """Queue the deletion of what the task took, once it is published."""
        pipe.delete(self.keys.live_taken(task_id))

    def release(self) -> bool:
        """Give up the armed key; True if riders are waiting and need a successor task."""
        keys = [self.keys.live_armed, self.keys.live_pending]
        return bool(self._release(keys=keys))


def decode(bodies: list[bytes]) -> Iterator[Rider]:
    """(app id, events) of each taken task body (JSON-escaped, as it sits in a message)."""
    for body in bodies:
        args = orjson.loads(orjson.loads(b'"' + body + b'"'))[0]
        yield args[0], args[1]
