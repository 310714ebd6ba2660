"""The node's side of the cluster-wide connection quota (gateway/state/connections.py).

``admit`` is awaited for a new connection of an app with ``max_connections`` (before
``connection_established``); every change of the local counts only marks the app dirty, and
one task writes this node's count of every dirty app (connections admitted plus those being
admitted), never two writes at once, so the last write always carries the current count.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import structlog

from gateway.state.connections import ConnectionCounts
from gateway.ws.background import WakeLoop

log = structlog.get_logger("clarion.ws.quota")

RETRY_DELAY = 1.0


class ConnectionQuota(WakeLoop):
    def __init__(self, counts: ConnectionCounts, local: Callable[[str], int]) -> None:
        super().__init__()
        self.counts = counts
        self.local = local  # app id -> connections admitted on this node (the hub's count)
        self.pending: Counter[str] = Counter()
        self._dirty: set[str] = set()

    async def admit(self, app_id: str, max_connections: int) -> bool:
        """Whether one more connection of the app fits in the cluster-wide quota."""
        if self.local(app_id) + self.pending[app_id] >= max_connections:
            return False
        self.pending[app_id] += 1
        try:
            return await self.counts.admit(
                app_id, self.local(app_id) + self.pending[app_id], max_connections
            )
        except Exception as exc:
            # Redis unreachable: admit (the quota is soft during an outage; nothing else
            # works without Redis either, and refusing would make clients give up: 4004).
            log.warning("quota_check_failed", app=app_id, error=str(exc))
            return True
        finally:
            self.pending[app_id] -= 1
            self.changed(app_id)

    def changed(self, app_id: str) -> None:
        self._dirty.add(app_id)
        self._wake.set()

    def mark_all(self, app_ids: list[str]) -> None:
        self._dirty.update(app_ids)
        self._wake.set()

    async def round(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for app_id in sorted(dirty):
            try:
                await self.counts.set(app_id, self.local(app_id) + self.pending[app_id])
            except Exception as exc:
                self._dirty.update(dirty)
                log.warning("connection_count_write_failed", error=str(exc))
                await asyncio.sleep(RETRY_DELAY)
                self._wake.set()
                break
