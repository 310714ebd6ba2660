"""``WakeLoop``: the shape of the node's background writers (bus publisher, occupancy,
connection quota, subscription counts).

Callers only record work and set ``_wake``; one task (``run``) does a ``round`` of
whatever has piled up, so rounds never overlap and many changes cost one round. ``stop`` lets
``run`` return once the current round is done (a Redis call is never cancelled midway).
"""

from __future__ import annotations

import asyncio


class WakeLoop:
    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopped = False

    def stop(self) -> None:
        """Let ``run`` return after its current round."""
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            await self.round()

    async def round(self) -> None:
        raise NotImplementedError
