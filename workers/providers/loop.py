"""The worker process's event loop for provider sends, and the blocking bridge to it.

aioapns binds to the loop current when a client is built, and aiohttp sessions to the loop they
were made on: so each worker process runs ONE event loop in a daemon thread (rebuilt after a
fork: a loop made in the parent is never used in a child) and every provider client is built
and used on it. The Celery task thread talks to it with ``call_soon_threadsafe`` and reads
results from a thread-safe queue.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from workers.providers.base import RETRY, SendResult


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # its transports' writes and reads cost a fraction of asyncio's
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _LoopThread:
    def __init__(self) -> None:
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self._run, name="push-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_lock = threading.Lock()
_loop: _LoopThread | None = None
_loop_pid: int | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's provider event loop (a fresh one in a forked child)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid = _LoopThread(), os.getpid()
        return _loop.loop


SendOne = Callable[[str, Any], Awaitable[SendResult]]


def start_sends(
    loop: asyncio.AbstractEventLoop,
    send_one: SendOne,
    items: Sequence[tuple[Any, str, Any]],
    out: queue.SimpleQueue,
) -> None:
    """Start a send on ``loop`` for each ``(key, token, message)``, from any thread (one
    wake-up of the loop for them all); ``(key, result)`` goes to ``out`` as each ends, whatever
    happens (an exception is a RETRY: the provider may not have seen it)."""

    async def one(key: Any, token: str, message: Any) -> None:
        try:
            result = await send_one(token, message)
        except Exception as exc:  # noqa: BLE001 - one bad send must not lose the others
            result = SendResult(RETRY, f"{type(exc).__name__}: {exc}")
        out.put((key, result))

    def start() -> None:
        for key, token, message in items:
            task = loop.create_task(one(key, token, message))
            _running.add(task)  # the loop keeps only weak references to its tasks
            task.add_done_callback(_running.discard)

    loop.call_soon_threadsafe(start)


_running: set[asyncio.Task[None]] = set()


def send_blocking(
    sender: Any, items: Sequence[tuple[Any, str, Any]], limit: int
) -> Iterator[tuple[Any, SendResult] | None]:
    """Send ``(key, token, message)`` items with at most ``limit`` in flight; yield ``(key,
    result)`` as each completes and ``None`` whenever nothing completed for a moment. For
    tools and tests: the worker's delivery keeps its own window (workers/push/window.py)."""
    out: queue.SimpleQueue = queue.SimpleQueue()
    pending = list(items)
    pending.reverse()
    in_flight = 0
    guard = time.monotonic() + sender.timeout * (len(items) / max(1, limit) + 2) + 10
    remaining = len(items)
    while remaining:
        batch = [pending.pop() for _ in range(min(len(pending), limit - in_flight))]
        if batch:
            start_sends(sender.loop, sender.send_one, batch, out)
            in_flight += len(batch)
        try:
            item = out.get(timeout=0.02)
        except queue.Empty:
            if time.monotonic() > guard:
                raise TimeoutError("the provider event loop did not finish the sends") from None
            yield None
            continue
        in_flight -= 1
        remaining -= 1
        yield item
