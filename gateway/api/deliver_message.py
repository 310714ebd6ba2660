"""The ``clarion.live.deliver`` Celery message, built so that Redis can finish it.

Used when the broker is the state Redis (``broker.url`` unset, the default); with another
broker only the body pieces are built, for the requests that ride (gateway/state/riders.py),
and the task is sent with Celery's producer (gateway/api/live_sender.py; the cost of each is
in bench/results/broker.md).

The API gives each event its serial and enqueues the task for the request in ONE Redis round
trip (``History.accept_and_enqueue``): this module writes the Celery (protocol 2) message as
kombu's Redis transport stores it, minus the serials, as ``pieces``; the accept script puts
each event's "serial,prev" between two pieces and LPUSHes the result onto the queue kombu's
workers BRPOP, or, while a task queued earlier has not started, appends the task body alone to
the list that task drains (gateway/state/history.py).
Measured against ``Celery.send_task`` (kombu producer, connection pool, a second round trip):
about 1 ms less between accept and enqueue per request, and events are never accepted
without their task (the two writes are one atomic script).

The message is what ``send_task(TASK, args=(app_id, events), queue="live")`` stores, with
``body_encoding = "utf-8"`` (kombu then takes the body as is; it only base64-encodes by
default) and a short ``argsrepr``. ``tests/api/test_api_events.py`` checks it field by field
against the message Celery itself writes, and every worker and e2e test consumes it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

TASK = "clarion.live.deliver"
QUEUE = "live"

_EMBED = b'{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'


def _json_string_content(raw: bytes) -> bytes:
    """``raw`` (JSON text) escaped as the inside of a JSON string."""
    return orjson.dumps(raw.decode("utf-8"))[1:-1]


# Stand-ins in the header template, replaced per message (no JSON escaping needed for them).
_ID, _TAG, _REPR = b"@@id@@", b"@@tag@@", b"@@repr@@"


@dataclass(frozen=True, slots=True)
class MessagePieces:
    """One request's task message, cut where the serials go.

    ``body`` holds ``n + 1`` pieces for ``n`` events: the task body (JSON-escaped, as it sits
    inside the message) is ``body[0] + link_0 + body[1] + ... + link_n-1 + body[n]``, where a
    link is the event's ``serial,prev``, and the whole message is ``head + that body +
    tail``."""

    head: bytes
    body: list[bytes]
    tail: bytes


class DeliverMessage:
    """Builds the pieces of one request's message. One per API process.

    ``written_by_script`` False (the broker is not the state Redis): only the body pieces are
    built, for the pending list of riders; ``head`` and ``tail`` are empty, which tells the
    script to push nothing, and the API queues the task with Celery's producer
    (gateway/api/live_sender.py)."""

    def __init__(self, key_prefix: str, written_by_script: bool = True) -> None:
        self.written_by_script = written_by_script
        self.queue_key = f"{key_prefix}{QUEUE}"  # kombu: global_keyprefix + queue (priority 0)
        origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._tail = b'",' + orjson.dumps({
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py", "task": TASK, "id": _ID.decode(), "shadow": None, "eta": None,
                "expires": None, "group": None, "group_index": None, "retries": 0,
                "timelimit": [None, None], "root_id": _ID.decode(), "parent_id": None,
                "argsrepr": _REPR.decode(), "kwargsrepr": "{}",
                "origin": origin, "ignore_result": None, "replaced_task_nesting": 0,
                "stamped_headers": None, "stamps": {},
            },
            "properties": {
                "correlation_id": _ID.decode(), "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE}, "priority": 0,
                "body_encoding": "utf-8", "delivery_tag": _TAG.decode(),
            },
        })[1:]

    def pieces(self, app_id: str, events: Sequence[Sequence[Any]]) -> MessagePieces:
        """The pieces for (channel, event, data, exclude) ``events``."""
        dumps = orjson.dumps
        body: list[bytes] = []
        current = b"[[" + dumps(app_id) + b",["
        for i, event in enumerate(events):
            # [channel, event, data, exclude] without its "]": "serial,prev" and "]" follow.
            current += (b",[" if i else b"[") + dumps(event)[1:-1] + b","
            body.append(current)
            current = b"]"
        body.append(current + b"]]," + _EMBED)
        if not self.written_by_script:
            return MessagePieces(b"", [_json_string_content(p) for p in body], b"")

        task_id = str(uuid.uuid4()).encode()
        argsrepr = _json_string_content(f"({app_id!r}, <{len(events)} events>)".encode())
        tail = (self._tail.replace(_ID, task_id).replace(_TAG, str(uuid.uuid4()).encode())
                .replace(_REPR, argsrepr))
        return MessagePieces(b'{"body":"', [_json_string_content(p) for p in body], tail)
