"""What every connection of a node shares: settings, hub, Redis-backed state, the publisher."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from config.settings import Settings
from gateway.protocol import frames
from gateway.protocol.names import ChannelKind
from gateway.state.apps import AppDirectory
from gateway.state.bus import BusEvent, UserPresence
from gateway.state.cache import ChannelCache
from gateway.state.presence import Presence
from gateway.state.users import SignedInUsers
from gateway.ws.bus import BusPublisher
from gateway.ws.hub import Hub
from gateway.ws.quota import ConnectionQuota

if TYPE_CHECKING:
    from gateway.channels.membership import Membership
    from gateway.dashboard.debuglog import NodeDebugLog
    from gateway.webhooks.reporter import Reporter
    from gateway.ws.connection import Connection

log = structlog.get_logger("clarion.ws.context")

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
    # Channels, complete (set by the node): the app resolver, the cache-channel store, the
    # cluster-wide sign-ins (watchlists) and connection quota.
    apps: AppDirectory | None = None
    cache: ChannelCache | None = None
    users: SignedInUsers | None = None
    quota: ConnectionQuota | None = None
    # Webhook reports (occupancy is reported by the hub).
    webhooks: Reporter | None = None
    # (app, watched user id) -> connections whose watchlist has that user.
    watchers: dict[tuple[str, str], set[Connection]] = field(default_factory=dict)
    # The debug log of apps a dashboard console watches (None: dashboard off).
    debuglog: NodeDebugLog | None = None

    @property
    def activity_timeout(self) -> int:
        return self.settings.websocket.activity_timeout

    @property
    def pong_timeout(self) -> float:
        return self.settings.websocket.pong_timeout

    @property
    def max_channels(self) -> int:
        return self.settings.websocket.max_channels_per_connection

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
        if self.webhooks is not None:
            self.webhooks.member_added(app_id, membership.channel, membership.user_id or "")
        self.debug(app_id, "member_added", channel=membership.channel,
                   user_id=membership.user_id, socket_id=socket_id)

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        data = frames.member_removed_data(user_id)
        self.publisher.publish(
            BusEvent(app_id, channel, "pusher_internal:member_removed", data, None, None)
        )
        if self.webhooks is not None:
            self.webhooks.member_removed(app_id, channel, user_id)
        self.debug(app_id, "member_removed", channel=channel, user_id=user_id)

    def debug(self, app_id: str, kind: str, **details: Any) -> None:
        """A debug log entry, kept only if a console watches the app (a set lookup)."""
        if self.debuglog is not None:
            self.debuglog.note(app_id, kind, **details)

    def forget(self, conn: Connection) -> None:
        """A connection is gone: drop it locally now, leave presence channels in Redis."""
        memberships = list(conn.subscriptions.values())
        conn.subscriptions.clear()
        admitted = conn.socket_id in self.hub.connections
        if admitted:
            self.debug(conn.app_id, "disconnected", socket_id=conn.socket_id,
                       channels=[m.channel for m in memberships])
        self.hub.remove_connection(
            conn, [m.channel for m in memberships], conn.user.id if conn.user else None
        )
        if admitted and self.quota is not None:
            self.quota.changed(conn.app_id)
        if conn.user is not None:
            self.unwatch(conn, conn.user.watchlist)
            if conn.counted_signed_in:
                conn.counted_signed_in = False
                self.spawn_cleanup(self.sign_out(conn.app_id, conn.user.id))
        presence = [m for m in memberships if m.kind is ChannelKind.PRESENCE]
        if presence:
            self.spawn_cleanup(self.leave_presence(conn.app_id, conn.socket_id, presence))

    def spawn_cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.cleanups.add(task)
        task.add_done_callback(self.cleanups.discard)

    # ----------------------------------------------------------------- hooks

    def cache_miss(self, app_id: str, channel: str) -> None:
        """A cache channel subscriber got ``pusher:cache_miss`` (Connection._after_subscribed)."""
        if self.webhooks is not None:
            self.webhooks.cache_miss(app_id, channel)

    # ----------------------------------------------------------------- sign-ins, watchlists

    async def sign_in(self, app_id: str, user_id: str) -> None:
        """Count a signed-in connection cluster-wide; announce the user if it came online."""
        assert self.users is not None
        if await self.users.sign_in(app_id, user_id):
            self.publisher.publish(UserPresence(app_id, user_id, True))

    async def sign_out(self, app_id: str, user_id: str) -> None:
        assert self.users is not None
        try:
            if await self.users.sign_out(app_id, user_id):
                self.publisher.publish(UserPresence(app_id, user_id, False))
        except Exception as exc:
            # Redis down: the row stays in P nu:{node}; the node's resync or sweep fixes it.
            log.warning("sign_out_failed", app=app_id, error=str(exc))

    def watch(self, conn: Connection, user_ids: tuple[str, ...]) -> None:
        for uid in user_ids:
            self.watchers.setdefault((conn.app_id, uid), set()).add(conn)

    def unwatch(self, conn: Connection, user_ids: tuple[str, ...]) -> None:
        for uid in user_ids:
            key = (conn.app_id, uid)
            conns = self.watchers.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.watchers[key]

    def user_presence(self, msg: UserPresence) -> None:
        """A bus message: a watched user came online or went offline somewhere."""
        conns = self.watchers.get((msg.app_id, msg.user_id))
        if not conns:
            return
        ids = [msg.user_id]
        frame = frames.watchlist_events(online=ids) if msg.online else frames.watchlist_events(
            offline=ids)
        for conn in list(conns):
            conn.send(frame)

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
