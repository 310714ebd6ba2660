"""Which bus topics the node listens to, and when a new one is live.

A node listens to ``P bus`` (control messages for every node, and events from workers of a
version before per-channel topics) and to ``P bus:{app}:{channel}`` for each channel it has
local subscribers on (gateway/state/keys.py), so it receives only the events it delivers. The
hub calls ``want`` for a channel's first local subscriber and ``drop`` when the channel's entry
goes; one task (``run``) turns what piled up into SUBSCRIBE and UNSUBSCRIBE commands of many
topics each, on the listener's connection: a burst of new channels costs a command, not one
each, and a channel left and joined again before the task ran costs nothing.

``live(topic)`` returns once Redis has confirmed the topic's subscription on the current
connection. The hub reads a new channel's baseline serial after that, so no event falls
between the two: an event accepted after the baseline was read is published after the
subscription, and reaches the node; one accepted before is at or below the baseline, which
the channel does not need. While the bus is down ``live`` returns at once: the listener
reconciles every channel from its log once it is subscribed again (gateway/ws/node.py). A
confirmation that does not come within ``TOPIC_WAIT`` lets the subscriber go on as well; the
next event's ``prev`` or the reconcile tick then fills the hole from the log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import structlog

from gateway.state.keys import Keys
from gateway.ws.background import WakeLoop

log = structlog.get_logger("clarion.ws.topics")

# Seconds a new channel's first subscriber waits at most for its topic's confirmation.
TOPIC_WAIT = 5.0
# Topics per SUBSCRIBE or UNSUBSCRIBE command (bounds one command's size).
PER_COMMAND = 1000


class Topics(WakeLoop):
    def __init__(self, keys: Keys) -> None:
        super().__init__()
        self.keys = keys
        self.control = keys.bus.encode()
        # The channels' topics the hub has entries for, and those wanted or dropped since the
        # last round (a round looks at these only, not at every channel of the node).
        self.wanted: set[bytes] = set()
        self._changed: set[bytes] = set()
        # The listener's connection, once its control topic subscription was sent.
        self._pubsub: Any = None
        # Topics whose last command on this connection was SUBSCRIBE, and the SUBSCRIBE
        # confirmations of each still to come: live once sent and none is pending (a topic
        # dropped and wanted again has the UNSUBSCRIBE's answer between its two).
        self._sent: set[bytes] = set()
        self._pending: Counter[bytes] = Counter()
        # Topics the connection subscribed when it was made, until all are confirmed.
        self._initial: set[bytes] = set()
        self._waiters: dict[bytes, asyncio.Event] = {}

    def topic(self, app_id: str, channel: str) -> bytes:
        return self.keys.bus_channel(app_id, channel).encode()

    def want(self, app_id: str, channel: str) -> bytes:
        topic = self.topic(app_id, channel)
        self.wanted.add(topic)
        self._changed.add(topic)
        self._wake.set()
        return topic

    def drop(self, app_id: str, channel: str) -> None:
        topic = self.topic(app_id, channel)
        self.wanted.discard(topic)
        self._changed.add(topic)
        self._wake.set()

    def is_live(self, topic: bytes) -> bool:
        return topic in self._sent and not self._pending[topic]

    async def live(self, topic: bytes) -> None:
        """Wait until ``topic`` is subscribed (see the module's docstring)."""
        if self._pubsub is None or self.is_live(topic):
            return
        event = self._waiters.get(topic)
        if event is None:
            event = self._waiters[topic] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), TOPIC_WAIT)
        except TimeoutError:
            log.warning("bus_topic_not_confirmed", topic=topic.decode(errors="replace"))

    # ----------------------------------------------------------------- the connection

    async def attach(self, pubsub: Any) -> None:
        """A new connection of the listener: subscribe the control topic and every wanted
        one. ``confirmed`` says when all of them are."""
        self._reset()
        self._changed.clear()  # all of them are subscribed below
        self._initial = {self.control, *self.wanted}
        self._mark_sent([self.control])
        await pubsub.subscribe(self.control)  # connects
        self._pubsub = pubsub
        await self._subscribe(pubsub, [t for t in self._initial if t != self.control])
        self._wake.set()  # topics wanted meanwhile

    def detach(self) -> None:
        """The connection is gone. Waiting subscribers go on: the listener reconciles every
        channel when it is subscribed again."""
        self._pubsub = None
        self._reset()

    def confirmed(self, topic: bytes) -> bool:
        """Redis confirmed a SUBSCRIBE of ``topic``; True when that completes the
        connection's initial set (the listener is then connected)."""
        left = self._pending[topic] - 1
        if left > 0:
            self._pending[topic] = left
        else:
            self._pending.pop(topic, None)
            if topic in self._sent:
                event = self._waiters.pop(topic, None)
                if event is not None:
                    event.set()
        if topic in self._initial:
            self._initial.discard(topic)
            return not self._initial
        return False

    async def round(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # attach subscribes every wanted topic
        changed, self._changed = self._changed, set()
        gone = [t for t in changed if t not in self.wanted and t in self._sent]
        new = [t for t in changed if t in self.wanted and t not in self._sent]
        try:
            for start in range(0, len(gone), PER_COMMAND):
                if self._pubsub is not pubsub:
                    return
                chunk = gone[start:start + PER_COMMAND]
                self._sent.difference_update(chunk)
                await pubsub.unsubscribe(*chunk)
            await self._subscribe(pubsub, new)
        except Exception as exc:
            # The listener sees the connection fail too, and attaches again (subscribing
            # every wanted topic); until then these are still to do.
            self._changed |= set(changed)
            log.warning("bus_topics_failed", error=str(exc))

    async def _subscribe(self, pubsub: Any, topics: list[bytes]) -> None:
        for start in range(0, len(topics), PER_COMMAND):
            if self._pubsub is not pubsub:
                return
            chunk = topics[start:start + PER_COMMAND]
            self._mark_sent(chunk)
            await pubsub.subscribe(*chunk)

    def _mark_sent(self, topics: list[bytes]) -> None:
        self._sent.update(topics)
        self._pending.update(topics)

    def _reset(self) -> None:
        self._sent = set()
        self._pending = Counter()
        self._initial = set()
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()
