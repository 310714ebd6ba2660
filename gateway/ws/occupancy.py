"""Keeps this node's occupancy hash (P occ:{app}:{node}) in step with local counts.

Subscribes and unsubscribes only mark a channel dirty; one task writes the current local
count of every dirty channel. Writes never overlap, so a count written late can never
overwrite a newer one, and a mass disconnect costs one write per channel, not per socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.state.occupancy import NodeOccupancy
from gateway.ws.background import WakeLoop

log = structlog.get_logger("clarion.ws.occupancy")

RETRY_DELAY = 1.0


class OccupancyWriter(WakeLoop):
    def __init__(self, occupancy: NodeOccupancy) -> None:
        super().__init__()
        self.occupancy = occupancy
        self.count: Callable[[str, str], int] = lambda app_id, channel: 0
        # Told which channels were written (subscription_count events, gateway/ws/subcount.py).
        self.on_written: Callable[[list[tuple[str, str]]], None] | None = None
        self._dirty: set[tuple[str, str]] = set()

    def mark(self, app_id: str, channel: str) -> None:
        self._dirty.add((app_id, channel))
        self._wake.set()

    def mark_all(self, channels: list[tuple[str, str]]) -> None:
        self._dirty.update(channels)
        self._wake.set()

    async def round(self) -> None:
        await self.write_dirty()

    async def write_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        written: list[tuple[str, str]] = []
        for i, (app_id, channel) in enumerate(sorted(dirty)):
            try:
                await self.occupancy.set(app_id, channel, self.count(app_id, channel))
                written.append((app_id, channel))
            except Exception as exc:  # Redis down: keep what is left for the next attempt
                rest = sorted(dirty)[i:]
                self._dirty.update(rest)
                log.warning("occupancy_write_failed", error=str(exc), pending=len(rest))
                self._written(written)
                await asyncio.sleep(RETRY_DELAY)
                self._wake.set()
                return
        self._written(written)

    def _written(self, channels: list[tuple[str, str]]) -> None:
        if channels and self.on_written is not None:
            self.on_written(channels)
