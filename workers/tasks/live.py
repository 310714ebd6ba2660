"""``clarion.live.deliver``: publish accepted events to the bus for the WebSocket nodes.

Args: ``(app_id, [[channel, event, data, exclude_socket_id, serial], ...])`` as the API
enqueues them (docs/contracts.md). Every event is published once, all in one pipeline.

Cache channels (``cache-`` ...): the same pipeline keeps each one's last event in
``P cache:{app}:{channel}`` (gateway/state/cache.py), by a script that never lets an older
serial overwrite a newer one, so redelivered or reordered tasks leave the newest event there.

Idempotent by serial: a redelivered task (worker lost, visibility timeout) publishes the same
events with the same serials, and nodes drop any ``serial <= last delivered`` for the
channel, so a subscriber never sees an event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, Task

from gateway.protocol.names import is_cache_channel
from gateway.state.bus import BusEvent
from gateway.state.cache import ChannelCache
from workers.celery_app import clarion_task, context

TASK_NAME = "clarion.live.deliver"


def publish_events(
    client: Any, bus_key: str, app_id: str, events: Sequence[Sequence[Any]],
    cache: ChannelCache | None = None,
) -> int:
    """Publish every event once on ``bus_key`` with one pipeline; return how many. With a
    ``cache``, the last event of each cache channel is stored first (same pipeline)."""
    pipe = client.pipeline(transaction=False)
    for channel, event, data, exclude, serial in events:
        if cache is not None and is_cache_channel(channel):
            cache.store_in(pipe, app_id, channel, int(serial), event, data)
        pipe.publish(
            bus_key,
            BusEvent(app_id, channel, event, data, int(serial), exclude or None).encode(),
        )
    pipe.execute()
    return len(events)


def register(app: Celery) -> Task:
    @clarion_task(app, TASK_NAME, "live", max_retries=10)
    def deliver(self: Task, app_id: str, events: list[list[Any]]) -> int:
        ctx = context(self.app)
        cache = ChannelCache(ctx.redis, ctx.keys, ctx.settings.cache.ttl)
        return publish_events(ctx.redis, ctx.keys.bus, app_id, events, cache)

    return deliver
