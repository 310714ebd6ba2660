"""One client connection: the Pusher protocol between a picows transport and the node.

Frames in are parsed by gateway.protocol.messages; decisions about channels are made by
gateway.channels; this module only sequences them and does the I/O. Messages are handled in
arrival order: the quick ones (ping, client events) synchronously, the ones that need Redis
(subscribe, unsubscribe from presence) in a task, with later messages parked until it ends,
so that a client event sent right after its subscribe sees the subscription.

Everything sent goes through ``enqueue`` (the hub's per-loop-turn coalescing), so replies and
channel events leave in the order they were produced, and a close frame is always last.

The transport is whatever ``attach`` was given: picows' for a WebSocket, an HTTP session for
pusher-js's HTTP fallback (gateway/ws/xhr/session.py), which takes the same WebSocket frames and
re-frames them for its client. Messages come in through ``on_ws_frame`` or ``receive``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

import orjson
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from picows import WSFrame, WSListener, WSMsgType, WSTransport

from config.settings import AppSettings
from gateway import channels
from gateway.channels import cache
from gateway.channels import user as user_auth
from gateway.channels.membership import Membership, SignedInUser
from gateway.protocol import frames, messages
from gateway.protocol.errors import (
    ClientEventRejected,
    ConnectionError_,
    InvalidMessage,
    OverCapacity,
    OverConnectionQuota,
    PongTimeout,
    SubscriptionError,
    SubscriptionLimitReached,
    SubscriptionNameError,
    TooManyChannels,
    Unauthorized,
    WatchlistLimit,
)
from gateway.protocol.messages import ResumeRequest
from gateway.protocol.names import ChannelKind, channel_name_problem, event_name_problem
from gateway.state.bus import BusEvent
from gateway.state.cache import CachedEvent
from gateway.ws import framing
from gateway.ws.context import CLOSE_TIMEOUT, NodeContext

log = structlog.get_logger("clarion.ws.connection")

# Default of AppSettings.max_client_events_per_second (the app's setting is what applies).
CLIENT_EVENTS_PER_SECOND = 10
# Kinds whose subscription counts as authorising the connection (user authentication timeout).
AUTHORISING_KINDS = (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)
# Messages parked behind a slow (Redis-bound) one; beyond this the client is flooding us.
# pusher-js re-sends every subscription at once on reconnect, so this must exceed the number
# of channels a real page holds.
MAX_BACKLOG = 1000


# The headers of every upgrade request and 101 response once the handshake is done.
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def release_handshake(transport: WSTransport) -> None:
    """Slim down the upgrade request and 101 response picows keeps on the transport for as
    long as the connection lives: ~1.8 KB of every idle connection, mostly header multidicts,
    that nothing reads after the handshake. The transport's attributes are read-only, so the
    objects are changed in place: no headers, and the request's method and version (always
    GET and HTTP/1.1: picows refuses anything else) as shared constants."""
    request = transport.request
    request.headers = _NO_HEADERS
    request.method, request.version = b"GET", b"HTTP/1.1"
    transport.response.headers = _NO_HEADERS


class Hangup(Protocol):
    """What the connection needs of its transport besides writing (picows' WSTransport)."""

    @property
    def is_close_frame_sent(self) -> bool: ...

    def disconnect(self, graceful: bool = True) -> None: ...


class Writer(Protocol):
    """Where the connection's bytes (WebSocket frames) go: an asyncio transport's subset."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        ...


class SubscriptionUnavailable(SubscriptionError):
    """Shared state (Redis) is unreachable: the client may retry later."""

    type, status, message = "ServerError", 503, "The server cannot take subscriptions right now."


class Connection(WSListener):
    __slots__ = (
        "ctx", "_app", "app_id", "socket_id", "transport", "_tr", "subscriptions", "user",
        "last_seen", "ping_sent", "_out", "closing", "closed", "_backlog", "_abort_handle",
        "_ce_window", "_ce_count", "_auth_deadline", "counted_signed_in",
    )

    def __init__(self, ctx: NodeContext, app: AppSettings, socket_id: str) -> None:
        super().__init__()
        self.ctx = ctx
        self._app = app
        self.app_id = app.id
        self.socket_id = socket_id
        self.transport: Hangup | None = None
        self._tr: Any = None
        self.subscriptions: dict[str, Membership] = {}
        self.user: SignedInUser | None = None
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0
        self._out: list[bytes] | None = None
        self.closing = False
        self.closed = False
        self._backlog: deque[messages.ClientMessage] | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._ce_window = 0.0
        self._ce_count = 0
        # When user_authentication_timeout runs out (monotonic; 0: not applicable). Checked by
        # the node's liveness sweep, up to a second late: a timer per connection would cost
        # ~0.6 KB of every connection.
        self._auth_deadline = 0.0
        # Whether this connection's sign-in is counted in Redis (P uon / P nu).
        self.counted_signed_in = False

    @property
    def app(self) -> AppSettings:
        """The app's current settings (``clarion apps`` changes apply to live connections:
        a rotated secret to the next signature checked)."""
        apps = self.ctx.apps
        current = apps.by_id(self.app_id) if apps is not None else None
        return current if current is not None else self._app

    # ----------------------------------------------------------------- picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        release_handshake(transport)
        self.attach(transport, transport.underlying_transport)

    def attach(self, transport: Hangup, tr: Writer) -> None:
        """Start the Pusher session: ``tr`` takes what is sent, ``transport`` hangs up."""
        self.transport = transport
        self._tr = tr
        # Our cut-off (flush) acts at max_write_buffer; keep the transport's own flow control
        # (picows logs every pause) out of the way below that.
        self._tr.set_write_buffer_limits(high=2 * self.ctx.max_write_buffer)
        app = self.app
        quota = self.ctx.quota
        if app.max_connections is not None and quota is not None:
            # Cluster-wide quota: one Redis script before the handshake completes.
            task = asyncio.get_running_loop().create_task(self._admit(app.max_connections))
            self.ctx.cleanups.add(task)
            task.add_done_callback(self.ctx.cleanups.discard)
            return
        self._established()

    async def _admit(self, max_connections: int) -> None:
        assert self.ctx.quota is not None
        admitted = await self.ctx.quota.admit(self.app_id, max_connections)
        if self.closed:
            return
        if not admitted:
            self.close(OverConnectionQuota())
            return
        self._established()

    def _established(self) -> None:
        self.ctx.hub.add_connection(self)
        if self.ctx.quota is not None:
            self.ctx.quota.changed(self.app_id)
        timeout = self.app.user_authentication_timeout
        if timeout is not None:
            self._auth_deadline = time.monotonic() + timeout
        self.send(frames.connection_established(self.socket_id, self.ctx.activity_timeout))
        self.ctx.debug(self.app_id, "connected", socket_id=self.socket_id)

    def _check_authorised(self) -> None:
        """user_authentication_timeout passed: a connection that neither signed in nor
        subscribed to a private or presence channel is closed (4009)."""
        self._auth_deadline = 0.0
        if self.user is not None:
            return
        if any(m.kind in AUTHORISING_KINDS for m in self.subscriptions.values()):
            return
        self.close(Unauthorized("Connection not authorized within timeout."))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # Any frame proves the client is alive (WS pings are answered by picows itself).
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0
        if transport.is_close_frame_sent:
            self._closed_by_picows()
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT and frame.fin:
            if not self.closing:
                self._on_text(frame.get_payload_as_bytes())
        elif msg_type is WSMsgType.CLOSE:
            self._on_close_frame(frame)
        elif msg_type in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            if not self.closing and frame.fin:
                self._reject(InvalidMessage(
                    "Invalid message format: only unfragmented text frames are supported"))

    def _closed_by_picows(self) -> None:
        """picows closed the connection itself: a frame over ``max_frame_bytes`` got close
        1009 as soon as its header was read. picows still parses that frame's payload and any
        frame after it, and hands them over until it disconnects; none may be acted on, and
        nothing may be written after its close frame."""
        if not self.closing:
            log.info("frame_too_large_closed", socket_id=self.socket_id)
        self.closing = True
        self._out = None

    def receive(self, payload: bytes) -> None:
        """One text message from a transport that has no WebSocket frames (HTTP fallback)."""
        self.alive()
        if not self.closing:
            self._on_text(payload)

    def alive(self) -> None:
        """The client showed signs of life (an HTTP transport's request, heartbeat included)."""
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone()

    def gone(self) -> None:
        """The transport is closed: leave everything the connection held."""
        self.closed = self.closing = True
        self._out = None
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        self.ctx.forget(self)

    # ----------------------------------------------------------------- output

    def send(self, payload: bytes) -> None:
        self.enqueue(framing.text(payload))

    def enqueue(self, data: bytes) -> None:
        if self.closing:
            return
        if self._out is None:
            self._out = [data]
            self.ctx.hub.schedule_flush(self)
        else:
            self._out.append(data)

    def room(self) -> int:
        """Bytes it can be sent now and stay well below the slow-subscriber cut-off (what a
        resume replays per step, gateway/ws/resume.py)."""
        tr = self._tr
        buffered = tr.get_write_buffer_size() if tr is not None else 0
        return self.ctx.max_write_buffer // 4 - buffered

    def flush(self) -> None:
        out = self._out
        if out is None:
            return
        self._out = None
        tr = self._tr
        if tr is None or tr.is_closing():
            return
        if self.transport is not None and self.transport.is_close_frame_sent:
            self._closed_by_picows()
            return
        tr.write(out[0] if len(out) == 1 else b"".join(out))
        if not self.closing and tr.get_write_buffer_size() > self.ctx.max_write_buffer:
            log.info("slow_subscriber_cut_off", socket_id=self.socket_id,
                     buffered=tr.get_write_buffer_size())
            self.close(OverCapacity("Over capacity: the connection is not reading fast enough."))

    def close(self, error: ConnectionError_) -> None:
        """``pusher:error`` then a close frame with the same code (pusher-js acts on close
        codes, pysher on error codes), after anything already queued."""
        if self.closing:
            return
        self.send(frames.from_error(error))
        self.enqueue(framing.close(error.code or 1000, error.message))
        self.closing = True
        self.flush()
        loop = asyncio.get_running_loop()
        self._abort_handle = loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    def _on_close_frame(self, frame: WSFrame) -> None:
        if not self.closing:
            # Client-initiated close: echo its code, as RFC 6455 asks, then hang up.
            code = frame.get_close_code().value
            self.enqueue(framing.close(code if code >= 1000 and code != 1005 else 1000))
            self.closing = True
            self.flush()
        if self.transport is not None:
            self.transport.disconnect()

    def _reject(self, error: ConnectionError_) -> None:
        if error.close:
            self.close(error)
        else:
            self.send(frames.from_error(error))

    # ----------------------------------------------------------------- liveness

    def check_liveness(self, now: float) -> None:
        """Called periodically by the node: ping an idle client, close a silent one or one
        not authorised in time."""
        if self.closing:
            return
        if self._auth_deadline and now >= self._auth_deadline:
            self._check_authorised()
            if self.closing:
                return
        if self.ping_sent:
            if now - self.ping_sent >= self.ctx.pong_timeout:
                self.close(PongTimeout())
        elif now - self.last_seen >= self.ctx.activity_timeout:
            self.ping_sent = now
            # Both kinds: pusher-js answers pusher:ping, browsers and pysher answer WS pings.
            self.send(frames.ping())
            self.enqueue(framing.ping())

    # ----------------------------------------------------------------- input sequencing

    def _on_text(self, payload: bytes) -> None:
        try:
            msg = messages.parse(payload)
        except InvalidMessage as exc:
            self._reject(exc)
            return
        if self._backlog is not None:
            if len(self._backlog) >= MAX_BACKLOG:
                self.close(OverCapacity("Too many messages in flight."))
                return
            self._backlog.append(msg)
            return
        pending = self._handle(msg)
        if pending is not None:
            self._backlog = deque()
            task = asyncio.get_running_loop().create_task(self._run_backlog(pending))
            self.ctx.cleanups.add(task)
            task.add_done_callback(self.ctx.cleanups.discard)

    async def _run_backlog(self, pending: Awaitable[None]) -> None:
        try:
            await pending
            while self._backlog:
                msg = self._backlog.popleft()
                # A close has started: what is still parked is not acted on (a client event
                # behind a subscribe must not reach others after a 4009 or a 1009).
                if self.closing:
                    break
                nxt = self._handle(msg)
                if nxt is not None:
                    await nxt
        except Exception:
            log.exception("message_handling_failed", socket_id=self.socket_id)
        finally:
            self._backlog = None

    def _handle(self, msg: messages.ClientMessage) -> Awaitable[None] | None:
        kind = type(msg)
        if kind is messages.ClientEvent:
            self._client_event(msg)  # type: ignore[arg-type]
        elif kind is messages.Ping:
            self.send(frames.pong())
        elif kind is messages.Subscribe:
            return self._subscribe(msg)  # type: ignore[arg-type]
        elif kind is messages.Unsubscribe:
            return self._unsubscribe(msg)  # type: ignore[arg-type]
        elif kind is messages.Signin:
            return self._signin(msg)  # type: ignore[arg-type]
        # Pong and unknown pusher:* events: nothing to do (real Pusher ignores unknown ones).
        return None

    # ----------------------------------------------------------------- subscribe

    def _subscribe(self, sub: messages.Subscribe) -> Awaitable[None] | None:
        problem = channel_name_problem(sub.channel)
        if problem:
            self.send(frames.subscription_error(SubscriptionNameError(sub.channel, problem)))
            return None
        limit = self.ctx.max_channels
        if sub.channel not in self.subscriptions and self._channels_held() >= limit:
            self.send(frames.subscription_error(TooManyChannels(sub.channel, limit)))
            return None
        try:
            membership = channels.authorise(self.app, self.socket_id, sub, self.user)
        except SubscriptionError as exc:
            self.send(frames.subscription_error(exc))
            self.ctx.debug(self.app_id, "subscription_error", socket_id=self.socket_id,
                           channel=sub.channel, error=str(exc))
            return None
        if membership.kind is not ChannelKind.PRESENCE and sub.channel in self.subscriptions:
            self.send(frames.subscription_succeeded(sub.channel))  # idempotent, as soketi
            return None
        return self._join(membership, sub.resume)

    def _channels_held(self) -> int:
        """Subscriptions the client made: the server-to-user channel is the server's doing."""
        held = len(self.subscriptions)
        if self.user is not None and user_auth.channel_for(self.user.id) in self.subscriptions:
            held -= 1
        return held

    async def _join(self, membership: Membership, resume: ResumeRequest | None = None) -> None:
        channel = membership.channel
        again = channel in self.subscriptions
        try:
            members = await self._join_presence(membership)
            cached = await self._read_cache(membership)
            if again:
                self._answer(membership, members, cached)
                return

            def answer(position: int | None, failure: str | None) -> None:
                self._answer(membership, members, cached, position, failure, resume)

            added = await self.ctx.hub.subscribe(self, channel, answer, resume)
        except SubscriptionError as exc:
            self.send(frames.subscription_error(exc))
            return
        except Exception as exc:
            log.warning("subscribe_failed", socket_id=self.socket_id, channel=channel,
                        error=str(exc))
            if membership.kind is ChannelKind.PRESENCE and not again:
                await self.ctx.leave_presence(self.app_id, self.socket_id, [membership])
            self.send(frames.subscription_error(SubscriptionUnavailable(channel)))
            return
        if not added:  # closed while we waited for Redis
            if membership.kind is ChannelKind.PRESENCE:
                await self.ctx.leave_presence(self.app_id, self.socket_id, [membership])
            return
        membership = self.ctx.hub.shared_membership(self.app_id, membership)
        self.subscriptions[membership.channel] = membership
        self.ctx.debug(self.app_id, "subscribed", socket_id=self.socket_id, channel=channel,
                       user_id=membership.user_id)
        if members is not None and members.is_new:
            self.ctx.member_added(self.app_id, membership, self.socket_id)

    async def _join_presence(self, membership: Membership) -> Any:
        if membership.kind is not ChannelKind.PRESENCE:
            return None
        result = await self.ctx.presence.join(
            self.app_id, membership.channel, self.socket_id, membership.user_id or "",
            membership.user_info, self.app.max_presence_members,
        )
        if result.full:
            raise SubscriptionLimitReached(membership.channel)
        return result

    async def _read_cache(self, membership: Membership) -> CachedEvent | None | bool:
        """The cached last event of a cache channel (None: empty); False when not a cache
        channel or the cache cannot be read (then nothing is replayed, not even a miss)."""
        if not membership.cache or self.ctx.cache is None:
            return False
        try:
            return await self.ctx.cache.get(self.app_id, membership.channel)
        except Exception as exc:
            log.warning("cache_read_failed", channel=membership.channel, error=str(exc))
            return False

    def _answer(self, membership: Membership, presence: Any,
                cached: CachedEvent | None | bool = False, position: int | None = None,
                failure: str | None = None, resume: ResumeRequest | None = None) -> None:
        """subscription_succeeded (with the subscription's position when it asked for
        positions), then what a failed resume owes the client, then the cache channel's last
        event, unless the client resumed and has it (docs/resume.md)."""
        channel = membership.channel
        if presence is None:
            self.send(frames.subscription_succeeded(channel, position))
        else:
            self.send(frames.presence_subscription_succeeded(channel, presence.members, position))
        if failure is not None and resume is not None and resume.serial is not None:
            self.send(frames.resume_failed(channel, failure, resume.serial))
        resumed = resume is not None and resume.serial is not None and failure is None
        if not resumed:
            self._after_subscribed(membership, cached)

    def _after_subscribed(self, membership: Membership,
                          cached: CachedEvent | None | bool = False) -> None:
        """Runs right after subscription_succeeded is queued, before any channel event.

        Cache channels (gateway/channels/cache.py): the cached last event, or
        ``pusher:cache_miss`` when there is none. A cached event newer than what this node
        has delivered on the channel is not replayed: it is on its way to this subscriber
        through the bus (it was accepted after the subscription's baseline).
        """
        if cached is False:
            return
        channel = membership.channel
        if cached is None or cached is True:
            self.send(frames.cache_miss(channel))
            self.ctx.cache_miss(self.app_id, channel)  # cache_miss webhook hook
            return
        ch = self.ctx.hub.channels.get((self.app_id, channel))
        if cache.replay_after_subscribe(cached.serial, ch.last if ch is not None else None):
            self.send(frames.channel_event(cached.event, channel, cached.data))

    def _unsubscribe(self, msg: messages.Unsubscribe) -> Awaitable[None] | None:
        membership = self.subscriptions.get(msg.channel)
        if membership is None or membership.kind is ChannelKind.USER:
            # Server-to-user events reach every signed-in connection, subscribed or not.
            return None
        del self.subscriptions[msg.channel]
        self.ctx.hub.unsubscribe(self, msg.channel)
        self.ctx.debug(self.app_id, "unsubscribed", socket_id=self.socket_id, channel=msg.channel)
        if membership.kind is ChannelKind.PRESENCE:
            return self.ctx.leave_presence(self.app_id, self.socket_id, [membership])
        return None

    # ----------------------------------------------------------------- client events

    def _client_event(self, msg: messages.ClientEvent) -> None:
        problem = self._client_event_problem(msg)
        if problem:
            self.send(frames.from_error(ClientEventRejected(problem)))
            return
        membership = self.subscriptions[msg.channel]
        user_id = membership.user_id if membership.kind is ChannelKind.PRESENCE else None
        self.ctx.publisher.publish(
            BusEvent(self.app_id, msg.channel, msg.event, msg.data, None, self.socket_id, user_id)
        )
        if self.ctx.webhooks is not None:
            self.ctx.webhooks.client_event(
                self.app_id, msg.channel, msg.event, msg.data, self.socket_id, user_id)
        self.ctx.debug(self.app_id, "client_event", socket_id=self.socket_id,
                       channel=msg.channel, event=msg.event, data=msg.data, user_id=user_id)

    def _client_event_problem(self, msg: messages.ClientEvent) -> str | None:
        app = self.app
        if not app.client_events:
            return "Client events are not enabled for this app."
        membership = self.subscriptions.get(msg.channel)
        if membership is None:
            return (f"Cannot broadcast client event (connection not subscribed to channel "
                    f"{msg.channel})")
        if not membership.accepts_client_events:
            return "Client events are only allowed on private and presence channels."
        problem = event_name_problem(msg.event, from_api=False)
        if problem:
            return problem
        if len(orjson.dumps(msg.data)) > app.max_event_bytes:
            return f"The event data is larger than the allowed {app.max_event_bytes} bytes."
        return self._rate_limited()

    def _rate_limited(self) -> str | None:
        now = time.monotonic()
        if now - self._ce_window >= 1.0:
            self._ce_window, self._ce_count = now, 0
        self._ce_count += 1
        limit = self.app.max_client_events_per_second
        if self._ce_count > limit:
            return f"Client event rejected: more than {limit} client events per second."
        return None

    # ----------------------------------------------------------------- sign-in

    def _signin(self, msg: messages.Signin) -> Awaitable[None] | None:
        try:
            user = user_auth.sign_in(self.app, self.socket_id, msg, self.user)
        except Unauthorized as exc:
            self.close(exc)
            return None
        if self.user is not None:  # the same user again: new user_info, same identity
            self.ctx.unwatch(self, self.user.watchlist)
            self.ctx.watch(self, user.watchlist)
            self.user = user
            self.send(frames.signin_success(msg.user_data))
            return None
        self.user = user
        self.ctx.hub.sign_in(self, user.id)
        return self._signed_in(user, msg.user_data)

    async def _signed_in(self, user: SignedInUser, user_data: str) -> None:
        """Join ``#server-to-user-{id}`` (so events sent to the user reach this connection,
        ordered like any channel's, whether or not the client subscribes to it), answer,
        count the sign-in cluster-wide, then the watchlist's online users."""
        channel = user_auth.channel_for(user.id)
        membership = Membership(channel, ChannelKind.USER, user.id, user.user_info)
        try:
            added = await self.ctx.hub.subscribe(
                self, channel, lambda _position, _failure: self.send(
                    frames.signin_success(user_data)))
        except Exception as exc:
            log.warning("user_channel_join_failed", socket_id=self.socket_id, error=str(exc))
            self.send(frames.signin_success(user_data))
            added = False
        if self.closed:
            return
        if added:
            self.subscriptions[channel] = membership
        if user.watchlist_truncated:
            self.send(frames.from_error(WatchlistLimit(
                f"Watchlist limit exceeded: only the first {user_auth.MAX_WATCHLIST} user ids "
                "are watched.")))
        self.ctx.watch(self, user.watchlist)
        if self.ctx.users is None:
            return
        try:
            await self.ctx.sign_in(self.app_id, user.id)
            self.counted_signed_in = True
            if self.closed:  # left while we counted it: take it back
                self.counted_signed_in = False
                await self.ctx.sign_out(self.app_id, user.id)
                return
            if user.watchlist:
                online = await self.ctx.users.online(self.app_id, list(user.watchlist))
                if online and not self.closed:
                    self.send(frames.watchlist_events(online=online))
        except Exception as exc:
            log.warning("sign_in_count_failed", socket_id=self.socket_id, error=str(exc))

