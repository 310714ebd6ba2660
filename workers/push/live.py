"""Deliver live if online, push if not: Clarion's extension to the Beams publish-to-users API.

A publish to users may carry ``"live": {"event": NAME, "data": ANY}``. Then:

1. At the start of the publish the worker reads, in one MULTI, each user's signed-in connection
   count (``P uon:{app}``) and sign-out count (``P uso:{app}``, gateway/state/users.py). The
   users signed in somewhere get the event on ``#server-to-user-{id}`` (serial, history and
   live delivery as any API event: every signed-in connection of theirs, on every node); the
   others are pushed at once (path ``push``).
2. ``push.live_grace`` seconds later the worker reads both counts again for the users it sent
   live. A user still online whose sign-out count has not moved kept at least one connection
   signed in from before the event was published until then: path ``live``, no push. Anyone
   else (signed out, or signed out and in again, or a node that died) is pushed as well: path
   ``live+push``.

So a user reachable either way is never left with nothing: a user offline at step 1 is pushed,
and a user online at step 1 is pushed unless a connection that was subscribed when the event
was published stayed signed in for the grace. Duplicates are possible in ``live+push``: the
event reached a connection that then closed (or the user signed in on a second device and out
on the first) within the grace, and the push comes as well. The one way to get nothing: a
connection that stays signed in for the grace but whose node has not written the event to it
by then and then loses it (the node dies) - the grace is the bound on node lag this trusts.

Per user, ``P bpu:{app}:{pid}`` holds ``push``, ``live``, ``live+push``, or ``wait:{n}``
(sent live, sign-outs were ``n``, not yet checked); the publish status shows it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from config.settings import AppSettings, Settings
from gateway.protocol.names import USER_CHANNEL_PREFIX
from gateway.state.history import History
from gateway.state.keys import Keys
from gateway.state.publishes import Publish, PublishStore

DELIVER_TASK = "clarion.live.deliver"  # workers/live: the API's event path
WAIT = "wait:"


class Live:
    """The live side of one publish to users, for one task run."""

    def __init__(self, settings: Settings, client: redis.Redis, store: PublishStore,
                 pub: Publish, app: AppSettings, send_task: Any) -> None:
        self.settings, self.r, self.store, self.pub, self.app = settings, client, store, pub, app
        self.keys = Keys.of(settings.redis)
        self.send_task = send_task
        self.paths_key = store.keys.user_paths(pub.app_id, pub.publish_id)

    @staticmethod
    def wanted(pub: Publish) -> bool:
        return pub.kind == "users" and isinstance(pub.payload.get("live"), dict)

    def _snapshot(self, users: list[str]) -> list[tuple[int, int]]:
        """``(connections signed in, sign-outs)`` per user, read at one instant."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hmget(self.keys.users_online(self.pub.app_id), users)
        pipe.hmget(self.keys.users_signouts(self.pub.app_id), users)
        online, outs = pipe.execute()
        return [(int(n or 0), int(o or 0)) for n, o in zip(online, outs, strict=True)]

    def start(self) -> None:
        """Step 1 (once per publish): send live to the users online now."""
        if self.r.exists(self.paths_key):
            return
        users = self.pub.targets
        state = self._snapshot(users)
        online = [u for u, (n, _) in zip(users, state, strict=True) if n > 0]
        if online:
            self._send_live(online)
        paths = {u: (f"{WAIT}{o}" if n > 0 else "push")
                 for u, (n, o) in zip(users, state, strict=True)}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.paths_key, mapping=paths)
        pipe.expire(self.paths_key, self.store.ttl)
        pipe.hset(self.store.keys.publish(self.pub.app_id, self.pub.publish_id), "live_check",
                  f"{time.time() + self.settings.push.live_grace:.3f}")
        pipe.execute()

    def _send_live(self, users: list[str]) -> None:
        live = self.pub.payload["live"]
        data = live.get("data")
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        events = [(USER_CHANNEL_PREFIX + u, live["event"], text, None) for u in users]
        history = History(self.r, self.keys, self.settings.history.max_events,
                          self.settings.history.retention)
        accepted = history.accept(self.pub.app_id, events, self.settings.history_of(self.app))
        payload = [[a.channel, a.event, a.data, a.exclude, a.serial, a.prev] for a in accepted]
        self.send_task(DELIVER_TASK, args=(self.pub.app_id, payload), queue="live")

    def push_now(self, users: list[str]) -> list[str]:
        """Of a page of users, the ones to push while expanding: offline at step 1."""
        paths = self.r.hmget(self.paths_key, users)
        return [u for u, p in zip(users, paths, strict=True) if _text(p) == "push"]

    def check_at(self) -> float | None:
        """When the live users are due for their check (None: checked, or none sent live)."""
        raw = self.r.hget(self.store.keys.publish(self.pub.app_id, self.pub.publish_id),
                          "live_check")
        if raw is None or not self._waiting():
            return None
        return float(_text(raw) or 0)

    def _waiting(self) -> dict[str, int]:
        paths = {_text(k): _text(v) for k, v in self.r.hgetall(self.paths_key).items()}
        return {u: int(p[len(WAIT):]) for u, p in paths.items() if p.startswith(WAIT)}

    def resolve(self) -> list[str]:
        """Step 2, once due: who stayed signed in (``live``) and who is pushed as well. Returns
        every ``live+push`` user (also those decided by an earlier run that died before their
        devices were claimed: claiming again sends only the devices not yet sent)."""
        waiting = self._waiting()
        if waiting:
            users = list(waiting)
            state = self._snapshot(users)
            decided = {u: ("live" if n > 0 and o == waiting[u] else "live+push")
                       for u, (n, o) in zip(users, state, strict=True)}
            self.r.hset(self.paths_key, mapping=decided)
        paths = {_text(k): _text(v) for k, v in self.r.hgetall(self.paths_key).items()}
        return [u for u, p in paths.items() if p == "live+push"]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
