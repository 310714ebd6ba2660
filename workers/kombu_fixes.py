"""A work-around for kombu's Redis transport, applied by ``create_celery``.

When the broker connection drops under a busy worker, Celery's consumer closes the connection
(``on_connection_error_after_connected``) and reconnects. Two things then reach a channel of
the closed connection, and each builds a Redis client again from the channel's connection,
which is gone by then:

- the channel's close restores the messages the worker had reserved (``restore_unacked``);
- a task that was running finishes, and its message is acknowledged or rejected on its old
  channel.

Both end in kombu's ``_connparams`` with an ``AttributeError`` (``'NoneType' object has no
attribute 'hostname'`` / ``'client'``), which is not a connection error, so Celery takes it
as unrecoverable and the worker stops. Seen with kombu 5.4 to 5.7 on a Redis restart at 200
events/s (tests/e2e/test_e2e_reliability.py); the same family as kombu issues #582 and #970.

The fix here says what it is: building a client for a channel whose connection is closed
raises the transport's own connection error, which kombu and Celery already handle (a close
goes on, an ack is logged as failed, the consumer reconnects). Nothing is lost: the messages
are still in the transport's ``unacked`` hash in Redis, and a worker's periodic sweep puts
them back on their queue once ``worker.visibility_timeout`` has passed (a delivery may then run
twice; every Clarion task is idempotent, and live deliveries are doorbells the nodes have
long made up for from the channels' logs).
"""

from __future__ import annotations

import functools
from typing import Any

_PATCHED = "_clarion_closed_channel_is_a_connection_error"


def closed_channel_is_a_connection_error() -> None:
    """Patch the Redis transport's ``Channel._connparams`` (idempotent)."""
    from kombu.transport import redis as transport
    from redis.exceptions import ConnectionError as RedisConnectionError

    original = transport.Channel._connparams
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel is closed")
        return original(self, asynchronous)

    setattr(_connparams, _PATCHED, True)
    transport.Channel._connparams = _connparams
