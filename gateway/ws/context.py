"""What every connection of a node shares: settings, hub, Redis-backed state, the publisher."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.settings import Settings
from gateway.protocol import frames
from gateway.protocol.names import ChannelKind
from gateway.state.bus import BusEvent
from gateway.state.presence import Presence
from gateway.ws.bus import BusPublisher
from gateway.ws.hub import Hub

if TYPE_CHECKING:
    from gateway.channels.membership import Membership
    from gateway.ws.connection import Connection

# How long a closing connection may take to answer our close frame before it is aborted.
CLOSE_TIMEOUT = 2.0


@dataclass
class NodeContext:
    settings: Settings
    node_id: str
    hub: Hub
    presence: Presence
    publisher: BusPublisher
    # Presence leaves still running for closed connections (awaited on shutdown).
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def activity_timeout(self) -> int:
        return self.settings.websocket.activity_timeout

    @property
    def pong_timeout(self) -> float:
        return self.settings.websocket.pong_timeout

    @property
    def max_write_buffer(self) -> int:
        return self.settings.websocket.max_write_buffer_bytes

    def new_socket_id(self) -> str:
        # Two random integers like soketi: unique cluster-wide in practice (1e18 space) and
        # unguessable, since other sockets' ids are used for exclusion.
        while True:
            socket_id = f"{secrets.randbelow(10**9) + 1}.{secrets.randbelow(10**9) + 1}"
            if socket_id not in self.hub.connections:
                return socket_id

    def member_added(self, app_id: str, membership: Membership, socket_id: str) -> None:
        data = frames.member_added_data(membership.user_id or "", membership.user_info)
        self.publisher.publish(BusEvent(
            app_id, membership.channel, "pusher_internal:member_added", data, None, socket_id
        ))

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        data = frames.member_removed_data(user_id)
        self.publisher.publish(
            BusEvent(app_id, channel, "pusher_internal:member_removed", data, None, None)
        )

    def forget(self, conn: Connection) -> None:
        """A connection is gone: drop it locally now, leave presence channels in Redis."""
        memberships = list(conn.subscriptions.values())
        conn.subscriptions.clear()
        self.hub.remove_connection(
            conn, [m.channel for m in memberships], conn.user.id if conn.user else None
        )
        presence = [m for m in memberships if m.kind is ChannelKind.PRESENCE]
        if presence:
            task = asyncio.get_running_loop().create_task(
                self.leave_presence(conn.app_id, conn.socket_id, presence)
            )
            self.cleanups.add(task)
            task.add_done_callback(self.cleanups.discard)

    async def leave_presence(
        self, app_id: str, socket_id: str, memberships: list[Membership]
    ) -> None:
        for m in memberships:
            try:
                user_id = await self.presence.leave(app_id, m.channel, socket_id)
            except Exception:
                # Redis down: the rows stay in P np:{node}; our next resync or a survivor's
                # sweep (if this node dies) removes them.
                continue
            if user_id is not None:
                self.member_removed(app_id, m.channel, user_id)
