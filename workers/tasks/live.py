"""``clarion.live.deliver``: publish accepted events to the bus for the WebSocket nodes.

Args: ``(app_id, [[channel, event, data, exclude_socket_id, serial, prev], ...])`` as the API
enqueues them (docs/architecture.md). Every event is published once, on its channel's topic
``P bus:{app}:{channel}`` (gateway/state/keys.py), so only the nodes with subscribers on the
channel receive it: one bus message per channel of a request (``b`` in gateway/state/bus.py),
pipelined. The same task then takes the requests that ride on
it (gateway/state/riders.py) and publishes theirs, and goes on taking until none has come for
``worker.live_linger`` seconds or ``worker.live_task_seconds`` have passed.

Cache channels (``cache-`` ...): the same pipeline keeps each one's last event in
``P cache:{app}:{channel}`` (gateway/state/cache.py), by a script that never lets an older
serial overwrite a newer one, so redelivered or reordered tasks leave the newest event there.

A doorbell (gateway/state/history.py): a redelivered task (worker lost, visibility timeout)
publishes the same events with the same serials, and nodes drop any ``serial <= last
delivered`` for the channel, so a subscriber never sees an event twice; a task or rider lost
with its worker is made up for by the nodes, which fill what they lack from the channels'
logs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task

from gateway.protocol.names import is_cache_channel
from gateway.state.bus import encode_batch
from gateway.state.cache import ChannelCache
from gateway.state.keys import Keys
from gateway.state.riders import Rider, Riders, decode
from workers.celery_app import clarion_task, context

TASK_NAME = "clarion.live.deliver"
# On Redis Cluster each app's requests ride on a task of that app (gateway/state/riders.py),
# and a busy app's task takes riders for its whole budget while it holds a pool slot: with
# more busy apps than slots, the others would wait that long for one (their events reaching
# subscribers only from the logs meanwhile). A short budget makes the apps' tasks take turns,
# each successor queued behind the others.
CLUSTER_TASK_SECONDS = 0.25
# Rider requests published per pipeline: bounds the worker's memory and Redis' output buffer.
RIDERS_PER_PIPELINE = 200


def queue_events(
    pipe: Any, keys: Keys, app_id: str, events: Sequence[Sequence[Any]],
    cache: ChannelCache | None = None, bus: Any = None,
) -> None:
    """Queue on ``pipe`` one PUBLISH per channel of the events (one request's), each on the
    channel's topic, the channel's events in their order; with a ``cache``, the last event of
    each cache channel is stored first. ``bus``: the pipeline for the PUBLISHes when it is not
    ``pipe`` (Redis Cluster, see WorkerContext.bus)."""
    if cache is not None:
        for channel, event, data, _exclude, serial, *_prev in events:
            if is_cache_channel(channel):
                cache.store_in(pipe, app_id, channel, int(serial), event, data)
    by_channel: dict[str, list[Sequence[Any]]] = {}
    for item in events:
        by_channel.setdefault(item[0], []).append(item)
    for channel, its_events in by_channel.items():
        (bus or pipe).publish(keys.bus_channel(app_id, channel),
                              encode_batch(app_id, its_events))


@dataclass(frozen=True, slots=True)
class Clients:
    """Where a task writes state (cache, riders) and bus messages: one client, except on
    Redis Cluster, whose client cannot pipeline PUBLISH (WorkerContext.bus)."""

    state: Any
    bus: Any

    def pipelines(self) -> tuple[Any, Any]:
        state = self.state.pipeline(transaction=False)
        if self.bus is self.state:
            return state, None
        return state, self.bus.pipeline(transaction=False)


def _publish_then(
    clients: Clients, riders: Riders, keys: Keys, batches: list[Rider],
    cache: ChannelCache | None, *, take: bool,
) -> list[bytes]:
    """Publish ``batches`` (one bus message each) and, with ``take``, take the riders waiting
    in the last pipeline. Returns what was taken."""
    results: list[Any] = []
    for start in range(0, max(len(batches), 1), RIDERS_PER_PIPELINE):
        pipe, bus = clients.pipelines()
        for app_id, events in batches[start : start + RIDERS_PER_PIPELINE]:
            queue_events(pipe, keys, app_id, events, cache, bus)
        last = start + RIDERS_PER_PIPELINE >= len(batches)
        if last and take:
            riders.take_in(pipe)
        # The cache before the bus: a subscriber told of an event finds it cached.
        results = pipe.execute(raise_on_error=False)
        published = bus.execute(raise_on_error=False) if bus is not None else []
        for result in [*(results[:-1] if last and take else results), *published]:
            if isinstance(result, Exception):
                raise result
    return riders.taken(results[-1]) if take else []


def deliver_with_riders(
    clients: Clients, riders: Riders, keys: Keys, app_id: str,
    events: Sequence[Sequence[Any]], cache: ChannelCache | None = None,
    budget: float = 5.0, linger: float = 0.05,
) -> tuple[int, bool]:
    """Publish ``events``, then the riders' as they come (each publish and the next take
    share a round trip), waiting at most ``linger`` seconds for one, for up to ``budget``
    seconds. Returns how many events were published and whether riders were left waiting
    for a successor task."""
    deadline = time.monotonic() + budget
    taken = _publish_then(clients, riders, keys, [(app_id, list(events))], cache, take=True)
    count = len(events)
    while True:
        if not taken:
            taken = riders.wait_and_take(linger)
            if not taken:
                return count, False
        batches = list(decode(taken))
        count += sum(len(e) for _, e in batches)
        more = time.monotonic() < deadline
        taken = _publish_then(clients, riders, keys, batches, cache, take=more)
        if not more:
            return count, riders.release()


def register(app: Celery) -> Task:
    @clarion_task(app, TASK_NAME, "live", max_retries=10)
    def deliver(self: Task, app_id: str, events: list[list[Any]]) -> int:
        ctx = context(self.app)
        cache = ChannelCache(ctx.redis, ctx.keys, ctx.settings.cache.ttl)
        riders = Riders(ctx.redis, ctx.keys, app_id)
        worker = ctx.settings.worker
        budget = worker.live_task_seconds
        if ctx.keys.cluster:
            budget = min(budget, CLUSTER_TASK_SECONDS)
        count, more = deliver_with_riders(
            Clients(ctx.redis, ctx.bus), riders, ctx.keys, app_id, events, cache,
            budget=budget, linger=worker.live_linger)
        if more:
            # Riders came in after the budget ran out: a successor (no events of its own)
            # takes them; the armed key stays set for it.
            self.apply_async(args=(app_id, []))
        return count

    return deliver
