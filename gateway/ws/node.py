"""The WebSocket node: lifecycle, registry heartbeats, liveness sweeps, graceful shutdown.

``run_node(settings)`` is what ``clarion ws`` calls: one process, one event loop (uvloop when
installed), one server on settings.websocket.host/port (SO_REUSEPORT when several processes
share the port) whose connections go to picows (WebSockets, /ready) or to pusher-js's HTTP
transports (gateway/ws/portswitch.py), one Redis bus connection (subscribed to the control
topic and to the topic of every channel with local subscribers, gateway/ws/topics.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from typing import Any, cast

import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from config.settings import AppSettings, RedisSettings, Settings
from gateway.dashboard.debuglog import NodeDebugLog
from gateway.dashboard.timeseries import NodeSampler
from gateway.logs import configure as configure_logs
from gateway.protocol.errors import AppDisabled, ReconnectNow, Unauthorized
from gateway.protocol.names import ChannelKind
from gateway.state.apps import AppDirectory
from gateway.state.bus import AppsChanged, BusMessage, Terminate, UserPresence
from gateway.state.cache import ChannelCache
from gateway.state.connections import ConnectionCounts
from gateway.state.history import History
from gateway.state.keys import Keys, split_presence_row
from gateway.state.occupancy import NodeOccupancy
from gateway.state.presence import Presence
from gateway.state.redis_client import async_bus_client, async_client
from gateway.state.registry import Registry, node_keys
from gateway.state.users import SignedInUsers
from gateway.tls import server_context
from gateway.webhooks.reporter import Reporter
from gateway.ws.bus import BusListener, BusPublisher, Sequencer
from gateway.ws.connection import Connection
from gateway.ws.context import CLOSE_TIMEOUT, NodeContext
from gateway.ws.hub import Channel, Hub
from gateway.ws.occupancy import OccupancyWriter
from gateway.ws.portswitch import PortSwitch, Waiting, picows_factory
from gateway.ws.quota import ConnectionQuota
from gateway.ws.readiness import Readiness
from gateway.ws.server import Router
from gateway.ws.subcount import SubscriptionCounter
from gateway.ws.topics import Topics
from gateway.ws.xhr.sessions import HttpSessions

log = structlog.get_logger("clarion.ws.node")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Client frames in the Pusher protocol are small; picows grows the buffer when needed (2048 is
# picows' minimum). Memory per idle connection, bench `memory` at 5,000 connections: 16.5 KB
# with picows' defaults here (aiofastnet transport, 4096), 9.3 KB with uvloop's own transport
# and 2048, about 8.6 KB with one logger for every connection as well (see start()).
READ_BUFFER_INIT = 2048
# The loop's own transports (uvloop's), not aiofastnet's (which picows' ws_create_server would
# pick when installed): ~5 KB less per connection, and they write at least as fast.
BUS_WAIT_ON_START = 5.0
# How often the node re-reads the Redis app store (also at once on an ``apps`` bus message).
APPS_REFRESH = 1.0
# A draining node sends its 4200s in slices this far apart (see Node._tell_to_reconnect).
DRAIN_TICK = 0.05


def make_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


COMMAND_CONNECTIONS = 64


def _redis_settings(settings: Settings) -> RedisSettings:
    if settings.redis.configured:
        return settings.redis
    return settings.redis.model_copy(update={"url": DEFAULT_REDIS_URL})


def _redis_clients(settings: RedisSettings) -> tuple[Any, Any, Any]:
    # Commands: a couple of quick retries, then fail fast so a client gets an error, not a hang.
    # A bounded pool that makes callers wait for a free connection: a burst of subscribes
    # (a page of clients reconnecting at once) queues up instead of failing with
    # "Too many connections", and Redis sees tens of connections per node, not thousands.
    commands = async_client(
        settings, "the WebSocket node", max_connections=COMMAND_CONNECTIONS, pool_timeout=5,
        socket_connect_timeout=2, socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )
    # The bus: blocking reads, no retries (the listener reconnects and reconciles itself; with
    # Sentinel its reconnect asks the sentinels for the master again, on Redis Cluster it takes
    # any node of it).
    bus = async_bus_client(
        settings, commands, "the WebSocket node", socket_connect_timeout=2,
        socket_timeout=None, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
    )
    # Node-made messages are published pipelined: on Redis Cluster over a plain connection too.
    publishing = commands if not settings.cluster else async_bus_client(
        settings, commands, "the WebSocket node", socket_connect_timeout=2, socket_timeout=5,
        retry=Retry(NoBackoff(), 0))
    return commands, bus, publishing


class Node:
    def __init__(self, settings: Settings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.node_id = make_node_id()
        self.keys = Keys.of(settings.redis)
        self.redis, self.bus_redis, self.bus_publishing = _redis_clients(
            _redis_settings(settings))
        log_settings = settings.history
        self.history = History(self.redis, self.keys, log_settings.max_events,
                               log_settings.retention)
        self.presence = Presence(self.redis, self.keys, self.node_id)
        self.registry = Registry(
            self.redis, self.keys, self.node_id, settings.websocket.node_timeout
        )
        self.occupancy = OccupancyWriter(NodeOccupancy(self.redis, self.keys, self.node_id))
        self.hub = Hub(self.history, self.occupancy)
        self.occupancy.count = self.hub.local_count
        self.sequencer = Sequencer(self.hub, self.history, on_gap=self.hub.signal_gap)
        self.hub.sequencer = self.sequencer
        self.topics = Topics(self.keys)
        self.hub.topics = self.topics
        self.publisher = BusPublisher(self.bus_publishing, self.keys)
        self.apps = AppDirectory(settings, self.redis, self.keys)
        self.users = SignedInUsers(self.redis, self.keys, self.node_id)
        self.connection_counts = ConnectionCounts(
            self.redis, self.keys, self.node_id, settings.websocket.node_timeout)
        self.quota = ConnectionQuota(self.connection_counts, self.hub.app_counts.__getitem__)
        self.subscription_counter = SubscriptionCounter(
            self.redis, self.keys, settings.websocket.node_timeout,
            self._wants_subscription_count, self.publisher.publish,
        )
        self.occupancy.on_written = self.subscription_counter.written
        self.ctx = NodeContext(
            settings, self.node_id, self.hub, self.presence, self.publisher,
            apps=self.apps, cache=ChannelCache(self.redis, self.keys, settings.cache.ttl),
            users=self.users, quota=self.quota,
        )
        self.webhooks = Reporter(self.redis, self.keys, settings, self.node_id, apps=self.apps)
        self.dashboard = _dashboard_jobs(settings, self.redis, self.node_id, self.hub)
        if self.dashboard:
            self.ctx.debuglog = self.dashboard[0]
        self.hub.webhooks = self.ctx.webhooks = self.webhooks
        self.listener = BusListener(
            self.bus_redis, self.topics, self.sequencer, self._terminate, self._bus_connected,
            self._control,
        )
        self.readiness = Readiness(_redis_settings(settings), self.listener.connected.is_set)
        self.router = Router(self.ctx, lambda: not self.shutting_down, self.readiness.problem)
        # pusher-js's HTTP transports, on the same port (gateway/ws/portswitch.py).
        self.http_sessions = HttpSessions(self.ctx, self.router)
        self.router.http_sessions = self.http_sessions.__len__
        self.waiting = Waiting()
        self.shutting_down = False
        self.server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat_failed = False
        self._halt = asyncio.Event()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self.hub.connections)

    def _local_connections(self) -> list[Connection]:
        # The hub only knows them as Subscribers; every one of them is a Connection.
        return cast(list[Connection], list(self.hub.connections.values()))

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        ws = self.settings.websocket
        try:
            await self.apps.refresh()
        except Exception as exc:  # Redis not up yet: config apps until the next refresh
            log.warning("apps_refresh_failed", error=str(exc))
        loop = asyncio.get_running_loop()
        websockets = picows_factory(
            self.router, max_frame_size=ws.max_frame_bytes,
            read_buffer_init_size=READ_BUFFER_INIT,
            # A Logger makes picows create a child Logger per connection (~0.7 KB that lives
            # as long as the connection); an adapter is used as is.
            logger=logging.LoggerAdapter(logging.getLogger("picows.server"), {}),
            handshake_timeout=5,
        )
        self.server = await loop.create_server(
            lambda: PortSwitch(websockets, self.http_sessions.connection, self.waiting),
            ws.host, ws.port, reuse_port=self.reuse_port or None, backlog=1024,
            # wss:// (and the HTTP fallback over https://): the switch and both servers work
            # on the TLS transport as they do on TCP.
            ssl=server_context(ws.tls_cert_file, ws.tls_key_file) if ws.tls_cert_file
            and ws.tls_key_file else None,
        )
        for job in (self.listener.run(), self.topics.run(), self.publisher.run(),
                    self.occupancy.run(),
                    self._heartbeat_loop(), self._liveness_loop(), self._reconcile_loop(),
                    self.quota.run(),
                    self.subscription_counter.run(), self._apps_loop(),
                    self.http_sessions.run(self._halted), self.waiting.run(self._halted),
                    self.readiness.run(self._halted), *(d.run() for d in self.dashboard)):
            self._tasks.append(loop.create_task(job))
        try:
            await asyncio.wait_for(self.listener.connected.wait(), BUS_WAIT_ON_START)
        except TimeoutError:
            log.warning("bus_not_connected_yet", node=self.node_id)
        await self.readiness.probe()
        log.info("node_started", node=self.node_id, host=ws.host, port=self.port)

    async def stop(self) -> None:
        """Graceful shutdown: the drain (docs/operations.md), then presence left and the
        registry entry removed."""
        if self.shutting_down:
            return
        self.shutting_down = True  # /ready answers 503, new connections get 4100
        log.info("node_stopping", node=self.node_id, connections=self.connections)
        if self.server is not None and self.reuse_port:
            # Siblings share the port: closing ours makes the kernel send every new connection
            # (and /ready) to them. Alone on the port, it stays open during the drain so that
            # a load balancer's health check reads the 503 instead of a refused connection.
            self.server.close()
        await self._drain()
        if self.server is not None:
            self.server.close()
        await _wait_all(self.ctx.cleanups, 5.0)
        await self.webhooks.close()
        await self._stop_background()
        await self.publisher.flush()
        try:
            await self._sweep_node_extras(self.node_id)
            await self.registry.deregister()
        except Exception as exc:
            log.warning("deregister_failed", error=str(exc))
        await self.redis.aclose()
        await self.bus_redis.aclose()
        if self.bus_publishing is not self.redis:
            await self.bus_publishing.aclose()
        await self.readiness.close()
        log.info("node_stopped", node=self.node_id)

    async def _stop_background(self) -> None:
        # Loops finish their current Redis call and return: cancelling redis-py midway can
        # leave a connection waiting forever. Only the bus listener (a blocking read) and
        # stragglers are cancelled.
        self._halt.set()
        self.occupancy.stop()
        self.quota.stop()
        self.subscription_counter.stop()
        self.publisher.stop()
        self.topics.stop()
        for job in self.dashboard:
            job.stop()
        self._tasks[0].cancel()  # the bus listener
        for task in [*self._side_tasks, *self.sequencer.tasks]:
            task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=3.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _drain(self) -> None:
        """After drain_notice, 4200 to every client, spread over drain_spread; wait until they
        have left (or shutdown_grace after the last 4200); cut the rest. All of it within
        drain_timeout."""
        ws = self.settings.websocket
        deadline = time.monotonic() + ws.drain_timeout
        notice = min(ws.drain_notice, ws.drain_timeout)
        # The balancer reads the 503 and takes us out. Not with siblings on the port: they
        # answer /ready (200) and take the newcomers, as they should.
        if notice and self.hub.connections and not self.reuse_port:
            await asyncio.sleep(notice)
        await self._tell_to_reconnect(min(ws.drain_spread, max(0.0, deadline - time.monotonic())))
        await self._cut_the_rest(min(deadline, time.monotonic() + max(ws.shutdown_grace, 0.1)))

    async def _cut_the_rest(self, until: float) -> None:
        """Wait until every client has left, or ``until``; disconnect those still there."""
        while self.hub.connections and time.monotonic() < until:
            await asyncio.sleep(0.02)
        left = self.connections
        for conn in self._local_connections():
            if conn.transport is not None:
                conn.transport.disconnect(graceful=False)
        log.info("node_drained", node=self.node_id, cut=left)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while self.hub.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _tell_to_reconnect(self, window: float) -> None:
        """Close with 4200 (pusher-js reconnects at once) in slices every DRAIN_TICK over
        ``window`` seconds: the other nodes get the reconnections (each a connect, subscribes
        and a resume read from Redis) as a steady flow, not as one burst."""
        conns = self._local_connections()
        if not conns:
            return
        slices = max(1, min(len(conns), int(window / DRAIN_TICK)))
        per_slice = -(-len(conns) // slices)  # ceiling
        for start in range(0, len(conns), per_slice):
            if start:
                await asyncio.sleep(window / slices)
            for conn in conns[start:start + per_slice]:
                if conn.socket_id in self.hub.connections:  # not gone meanwhile
                    conn.close(ReconnectNow())

    # ----------------------------------------------------------------- background loops

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.websocket.heartbeat_interval
        while not self._halt.is_set():
            try:
                await self.registry.heartbeat()
                if self._heartbeat_failed:
                    self._heartbeat_failed = False
                    await self._resync()
                swept = await self.registry.sweep(
                    self.presence, self._swept_member, self._sweep_node_extras)
                for node_id in swept:
                    self.webhooks.node_died(node_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._heartbeat_failed:
                    log.warning("heartbeat_failed", node=self.node_id, error=str(exc))
                self._heartbeat_failed = True
            if await self._halted(interval):
                return

    async def _halted(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True once the node is stopping."""
        try:
            await asyncio.wait_for(self._halt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _swept_member(self, app_id: str, channel: str, user_id: str) -> None:
        self.ctx.member_removed(app_id, channel, user_id)

    async def _sweep_node_extras(self, node_id: str) -> None:
        """A node is gone (dead, or this one stopping): its connection counts and sign-ins
        leave with it; users with no other connection go offline (watchlists)."""
        await self.connection_counts.sweep_node(node_id)
        for app_id, user_id in await self.users.sweep_node(node_id):
            # Published directly: on shutdown the publisher has already stopped.
            await self.redis.publish(self.keys.bus, UserPresence(app_id, user_id, False).encode())

    # ----------------------------------------------------------------- apps, control

    def _wants_subscription_count(self, app_id: str) -> bool:
        app = self.apps.by_id(app_id)
        return app is not None and app.subscription_count

    async def _apps_loop(self) -> None:
        while not await self._halted(APPS_REFRESH):
            await self._refresh_apps()

    async def _refresh_apps(self) -> None:
        try:
            changed = await self.apps.refresh()
        except Exception as exc:
            log.warning("apps_refresh_failed", error=str(exc))
            return
        for app in changed:
            self._apply_app_change(app)

    def _apply_app_change(self, app: AppSettings) -> None:
        if app.enabled:
            return
        for conn in self._local_connections():
            if conn.app_id == app.id:
                conn.close(AppDisabled())

    def _control(self, msg: BusMessage) -> None:
        if isinstance(msg, UserPresence):
            self.ctx.user_presence(msg)
        elif isinstance(msg, AppsChanged):
            self._spawn(self._refresh_apps())

    async def _liveness_loop(self) -> None:
        ws = self.settings.websocket
        tick = max(0.05, min(1.0, ws.activity_timeout / 4, ws.pong_timeout / 4))
        while not await self._halted(tick):
            now = time.monotonic()
            for conn in self._local_connections():
                conn.check_liveness(now)

    # ----------------------------------------------------------------- recovery

    def _bus_connected(self) -> None:
        """(Re)subscribed to the bus: events published meanwhile were missed; fill them."""
        if self.hub.channels:
            self._spawn(self._reconcile())

    async def _reconcile(self) -> None:
        channels = list(self.hub.channels.values())
        try:
            currents = await self._current_serials(channels)
        except Exception as exc:
            log.warning("reconcile_failed", error=str(exc))
            return
        for ch, current in zip(channels, currents, strict=True):
            self.sequencer.reconcile(ch, current)

    async def _reconcile_loop(self) -> None:
        """Fill events accepted but never published. kombu's Redis transport pops a task
        before it records it as unacknowledged, so a worker killed in between loses the task;
        its events are in history, and nothing else would reveal the gap on a quiet channel.
        A serial the counter showed one interval ago and still undelivered is filled from
        history; younger ones are normally still in flight and are left to the bus."""
        behind: dict[tuple[str, str], int] = {}
        while not await self._halted(self.settings.websocket.reconcile_interval):
            channels = [ch for ch in self.hub.channels.values() if ch.last is not None]
            try:
                currents = await self._current_serials(channels)
            except Exception as exc:
                log.warning("reconcile_failed", error=str(exc))
                continue
            now_behind: dict[tuple[str, str], int] = {}
            for ch, current in zip(channels, currents, strict=True):
                if ch.last is None or current <= ch.last:
                    continue
                key = (ch.app_id, ch.name)
                seen = behind.get(key)
                if seen is not None and seen > ch.last:
                    log.info("reconcile_fill", app=ch.app_id, channel=ch.name,
                             last=ch.last, target=seen)
                    self.sequencer.reconcile(ch, seen)
                now_behind[key] = current
            behind = now_behind

    async def _current_serials(self, channels: list[Channel]) -> list[int]:
        return await self.history.current_serials([(ch.app_id, ch.name) for ch in channels])

    async def _resync(self) -> None:
        """Redis came back after heartbeats failed: a survivor may have swept this node.
        Rewrite occupancy, rejoin local presence members, drop rows of sockets now gone."""
        log.info("resync", node=self.node_id)
        self.webhooks.resync()
        self.occupancy.mark_all(list(self.hub.channels))
        self.quota.mark_all(list(self.hub.app_counts))
        if not await self.users.has_rows():  # swept meanwhile: count our sign-ins again
            for conn in self._local_connections():
                if conn.user is not None and conn.counted_signed_in:
                    await self.ctx.sign_in(conn.app_id, conn.user.id)
        for conn in self._local_connections():
            for m in list(conn.subscriptions.values()):
                if m.kind is ChannelKind.PRESENCE:
                    result = await self.presence.join(
                        conn.app_id, m.channel, conn.socket_id, m.user_id or "", m.user_info,
                        10**9,  # already admitted: the member limit does not apply again
                    )
                    if result.is_new:
                        self.ctx.member_added(conn.app_id, m, conn.socket_id)
        for key in await node_keys(self.redis, self.keys, self.keys.node_presence, self.node_id):
            for row in await self.redis.smembers(key):
                app_id, channel, socket_id = split_presence_row(row.decode())
                conn = cast(Connection | None, self.hub.connections.get(socket_id))
                if conn is None or channel not in conn.subscriptions:
                    user_id = await self.presence.leave(app_id, channel, socket_id)
                    if user_id is not None:
                        self.ctx.member_removed(app_id, channel, user_id)

    def _terminate(self, msg: Terminate) -> None:
        for conn in cast(list[Connection], self.hub.signed_in(msg.app_id, msg.user_id)):
            conn.close(Unauthorized("You got disconnected by the app."))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


def _dashboard_jobs(settings: Settings, redis: Any, node_id: str,
                    hub: Hub) -> list[Any]:
    """The debug log writer and the chart sampler, when the dashboard is on."""
    dash = settings.dashboard
    if not dash.active:
        return []
    prefix = settings.redis.key_prefix
    return [NodeDebugLog(redis, prefix, dash.log_max_entries, node_id),
            NodeSampler(redis, prefix, node_id, dash.chart_minutes, hub.app_counts,
                        hub.delivered)]


async def _wait_all(tasks: set[asyncio.Task[Any]], timeout: float) -> None:
    if tasks:
        await asyncio.wait(list(tasks), timeout=timeout)


def create_node(settings: Settings, *, reuse_port: bool = False) -> Node:
    return Node(settings, reuse_port=reuse_port)


# --------------------------------------------------------------------------- process entry


async def serve(settings: Settings, reuse_port: bool = False) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down gracefully."""
    node = create_node(settings, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    await node.stop()


def run_node(settings: Settings, reuse_port: bool = False) -> int:
    """``clarion ws``: blocks until a signal, returns 0 after a graceful shutdown."""
    configure_logs(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(settings, reuse_port))
    else:
        uvloop.run(serve(settings, reuse_port))
    return 0
