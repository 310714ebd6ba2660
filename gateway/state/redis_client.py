"""Redis clients made from ``[redis]``: on a URL, or on the master a set of sentinels names.

Every process makes its clients here (API, workers, WebSocket node, CLI), so that with
Sentinel they all follow a failover the same way: a Sentinel-managed connection asks the
sentinels for the master's address each time it connects, a connection to a master that died
fails (and is made again on the next command), and one to a master demoted to replica fails on
its first write (redis-py turns READONLY into a connection error). Callers keep their own
timeouts and retry policies: a request still gets 503 fast, the bus listener still reconnects
and catches up from the logs.

Sentinel alone does not move a client that is still connected to a master it demoted: after
a graceful ``SENTINEL FAILOVER`` the old master keeps accepting writes for seconds (until the
sentinels reconfigure it), and those writes are discarded when it resyncs from the new one. So
every process also listens to the sentinels' announcements (:class:`FailoverWatch`): from the
moment one of them starts a failover of our service until ``+switch-master``, connections are
refused (the API answers 503 and Retry-After, the node retries), and at ``+switch-master`` every
connection of the process is closed, so each reconnects to the new master. Before that, the
repairs registered with ``before_resume`` run on the new master (the API's: put back the chain
heads the old master took with it, gateway/state/chain_heads.py).

The Celery broker on Sentinel is kombu's ``sentinel://`` transport (:func:`celery_broker`),
given the same behaviour by workers/sentinel_broker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
import structlog
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import RedisSettings

log = structlog.get_logger("clarion.redis")

# A sentinel that does not answer within this long is skipped for the next one: discovering
# the master must not take a request's whole deadline.
SENTINEL_TIMEOUT = 0.5


class RedisNotConfigured(ValueError):
    """Neither ``redis.url`` nor ``redis.sentinels`` is set."""

    def __init__(self, who: str) -> None:
        super().__init__(f"redis.url (or redis.sentinels) is not set: {who} needs Redis")


# Sentinel events that begin a failover of a master, and those that end one.
FAILOVER_BEGINS = frozenset({"+try-failover", "+selected-slave",
                             "+failover-state-send-slaveof-noone"})
# (Not "-failover-abort-not-elected": a sentinel that lost the election says it while the
# winner goes on.)
FAILOVER_ENDS = frozenset({"+switch-master", "-failover-abort-no-good-slave",
                           "-failover-abort-slave-timeout"})
# Writes are refused at most this long after a failover began without +switch-master (an
# aborted failover whose abort we missed must not stop a process for good).
PAUSE_MAX = 10.0
WATCH_RETRY = 0.5


# Redis unreachable, loading, or (Redis Cluster) moving a slot or failing a master over, and
# still so after the client's own retries: the operation may succeed if tried again shortly
# (the API answers 503 + Retry-After, tasks retry).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,  # the cluster is down, or redirections ran out (TTL)
    redis.exceptions.TryAgainError,  # a multi-key command on a slot half moved
    redis.exceptions.SlotNotCoveredError,
)


class FailoverInProgress(redis.exceptions.ConnectionError):
    """A sentinel is moving the master: refused rather than written to a master being
    demoted (whose writes would be lost)."""


class FailoverWatch:
    """Listens to every sentinel's announcements for one service, in daemon threads of the
    current process (started again in a forked child)."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.paused_until = 0.0
        # Bumped at every +switch-master: pools compare it with what they last saw.
        self.generation = 0
        # (pid, callback): called at +switch-master in the process that registered it.
        self._on_switch: list[tuple[int, Callable[[], None]]] = []
        self._repairs: list[tuple[int, Callable[[redis.Redis], None]]] = []
        # The master announced last ((host, port)), None until a switch was seen.
        self.master: tuple[str, int] | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        # A child forked while a watch thread held the lock would wait on it for ever.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def check(self, pause: bool = True) -> int:
        """The current generation; raises FailoverInProgress while a failover runs (with
        ``pause``)."""
        if self._pid != os.getpid():
            self._start()
        if pause and self.paused_until and time.monotonic() < self.paused_until:
            raise FailoverInProgress(f"Redis failover of {self.settings.service_name!r} "
                                     "in progress")
        return self.generation

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in a watch thread) at every switch of the master."""
        self._on_switch.append((os.getpid(), callback))

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            for host, port in self.settings.sentinel_addresses:
                threading.Thread(target=self._listen, args=(host, port), daemon=True,
                                 name=f"sentinel-watch-{port}").start()

    def _listen(self, host: str, port: int) -> None:
        kwargs = _sentinel_kwargs(self.settings)
        kwargs["socket_timeout"] = None  # a subscription waits as long as it takes
        while True:
            client = redis.Redis(host=host, port=port, decode_responses=True, **kwargs)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(*FAILOVER_BEGINS, *FAILOVER_ENDS)
                for msg in pubsub.listen():
                    self.handle(msg["channel"], msg["data"])
            except redis.exceptions.RedisError:
                pass
            except Exception as exc:  # noqa: BLE001 - an announcement we cannot read
                log.warning("sentinel_watch_failed", sentinel=f"{host}:{port}", error=str(exc))
            finally:
                client.close()
            time.sleep(WATCH_RETRY)

    def handle(self, event: str, data: str) -> None:
        """One sentinel announcement (``data`` names the master, after ``@`` for events about
        a replica)."""
        words = data.split()
        if "@" in words:
            name = words[words.index("@") + 1]
        elif event == "+switch-master":
            name = words[0]
        else:  # "master <name> <ip> <port>"
            name = words[1] if len(words) > 1 else ""
        if name != self.settings.service_name:
            return
        if event in FAILOVER_BEGINS:
            self.paused_until = time.monotonic() + PAUSE_MAX
        elif event == "+switch-master":
            with self._lock:  # every sentinel announces it: the first one is acted on
                new = (words[3], int(words[4]))
                if new == self.master:
                    return
                self.master = new
                self._switched(*new)
        else:
            self.paused_until = 0.0

    def _switched(self, host: str, port: int) -> None:
        pid = os.getpid()
        # Before anything of this process writes to the new master (still paused).
        repairs = [repair for owner, repair in self._repairs if owner == pid]
        if repairs:
            client = self.master_client(host, port)
            try:
                for repair in repairs:
                    repair(client)
            except Exception as exc:  # noqa: BLE001 - never keep the process paused
                log.warning("failover_repair_failed", error=str(exc))
            finally:
                client.close()
        self.generation += 1
        self.paused_until = 0.0
        for owner, callback in list(self._on_switch):
            if owner == pid:  # a forked child's pools and loops are not its parent's
                try:
                    callback()
                except Exception as exc:  # noqa: BLE001 - a closed loop: its pool is gone
                    log.warning("failover_reconnect_failed", error=str(exc))

    def master_client(self, host: str, port: int) -> redis.Redis:
        """A plain client on the new master, for repairs made while the pools are paused."""
        return redis.Redis(host=host, port=port, socket_connect_timeout=SENTINEL_TIMEOUT,
                           socket_timeout=2, **_master_kwargs(self.settings))

    def before_resume(self, repair: Callable[[redis.Redis], None]) -> None:
        """Call ``repair`` with a client on the new master at every switch, before this
        process's pools may connect to it."""
        self._repairs.append((os.getpid(), repair))


_WATCHES: dict[tuple[Any, ...], FailoverWatch] = {}
_WATCHES_LOCK = threading.Lock()


def failover_watch(settings: RedisSettings) -> FailoverWatch:
    """The process's watch of this deployment's sentinels (one for all its clients)."""
    key = (tuple(settings.sentinels), settings.service_name, settings.sentinel_password)
    with _WATCHES_LOCK:
        watch = _WATCHES.get(key)
        if watch is None:
            watch = _WATCHES[key] = FailoverWatch(settings)
    return watch


class _WatchedPool(redis.sentinel.SentinelConnectionPool):
    """Refuses connections while a failover runs; closes every connection, in use or not,
    once the master has switched (at once, from the watch thread), so each reconnects to the
    new master."""

    watch: FailoverWatch
    _seen = 0
    # Refuse connections while a failover runs (kombu's pool does not: see follow_failovers).
    pauses = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._follow()

    def _follow(self) -> None:
        pool = weakref.ref(self)

        def switched() -> None:
            live = pool()
            if live is not None:
                live.switched()

        self.watch.subscribe(switched)

    def switched(self) -> None:
        """Idle connections are closed; those in use are shut down, not closed, so that their
        owner (a thread blocked reading, kombu's event loop polling the socket) sees the end
        of the stream and reconnects itself: a socket closed under an event loop's poller
        never wakes it."""
        self.disconnect(inuse_connections=False)
        with self._lock:
            busy = list(self._in_use_connections)
        for connection in busy:
            sock = getattr(connection, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        generation = self.watch.check(self.pauses)
        if generation != self._seen:
            self._seen = generation
            self.disconnect(inuse_connections=True)
        return super().get_connection(*args, **kwargs)


class _AsyncWatchedPool(aiosentinel.SentinelConnectionPool):
    """As _WatchedPool; besides, at a switch the pool's connections are closed on its event
    loop at once, even if no command asks for a connection (a pub/sub subscription holds its
    one connection for good)."""

    watch: FailoverWatch
    _seen = 0
    _following = False

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        generation = self.watch.check()
        if not self._following:
            self._following = True
            self._follow(asyncio.get_running_loop())
        if generation != self._seen:
            self._seen = generation
            await self.disconnect(inuse_connections=True)
        return await super().get_connection(*args, **kwargs)

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        pool = weakref.ref(self)

        def switched() -> None:
            live = pool()
            if live is not None:
                loop.call_soon_threadsafe(
                    lambda: loop.create_task(live.disconnect(inuse_connections=True)))

        self.watch.subscribe(switched)


class _BlockingWatchedPool(_AsyncWatchedPool, aioredis.BlockingConnectionPool):
    """Sentinel-managed connections in a bounded pool that makes callers wait for a free one
    (the WebSocket node's command pool)."""


def _watched(cls: type, settings: RedisSettings) -> type:
    return type(cls.__name__, (cls,), {"watch": failover_watch(settings)})


def follow_failovers(pool: redis.sentinel.SentinelConnectionPool, settings: RedisSettings
                     ) -> None:
    """Make a Sentinel pool made elsewhere (kombu's) follow a switch as ours do
    (:class:`_WatchedPool`), without refusing connections meanwhile: a refused connection makes
    a Celery worker restart its consumer, and the restarted one was seen waiting on the old
    master until the sentinels reconfigured it. What a worker writes to the broker during the
    failover (acks) is idempotent: a task whose ack was lost runs again, and nodes drop what
    they already delivered."""
    cls = _watched(_WatchedPool, settings)
    cls.pauses = False
    pool.__class__ = cls
    pool._follow()  # type: ignore[attr-defined]


def _sentinel_kwargs(settings: RedisSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT,
                           "socket_timeout": SENTINEL_TIMEOUT}
    if settings.sentinel_password is not None:
        out["password"] = settings.sentinel_password
    return out


def _master_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {"db": settings.db, "password": settings.password}


def sync_client(settings: RedisSettings, who: str, **options: Any) -> redis.Redis:
    """A client on the deployment's Redis (the master, with Sentinel); ``options`` are the
    connection's (timeouts, retry, health checks); ``who`` names the caller in errors."""
    if settings.sentinels:
        manager = redis.sentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
        return manager.master_for(  # type: ignore[no-any-return]
            settings.service_name, connection_pool_class=_watched(_WatchedPool, settings),
            **_master_kwargs(settings), **options)
    if settings.url is None:
        raise RedisNotConfigured(who)
    if settings.cluster:
        # A master that died is replaced within seconds: fail within a fraction of one
        # (callers answer 503 or retry their task) rather than wait it out in the client.
        options.setdefault("retry", Retry(ExponentialBackoff(cap=0.25, base=0.05), 2))
        return redis.RedisCluster.from_url(settings.url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.url, **options)


def async_client(settings: RedisSettings, who: str, *, max_connections: int | None = None,
                 pool_timeout: float = 5.0, **options: Any) -> aioredis.Redis:
    """An asyncio client; with ``max_connections`` its pool is bounded and blocking (callers
    wait up to ``pool_timeout`` for a free connection)."""
    if settings.sentinels:
        manager = aiosentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
        pool_class = _AsyncWatchedPool
        if max_connections is not None:
            pool_class = _BlockingWatchedPool
            options.update(max_connections=max_connections, timeout=pool_timeout)
        return manager.master_for(  # type: ignore[no-any-return]
            settings.service_name, connection_pool_class=_watched(pool_class, settings),
            **_master_kwargs(settings), **options)
    if settings.url is None:
        raise RedisNotConfigured(who)
    if settings.cluster:
        return _async_cluster(settings.url, max_connections, options)
    if max_connections is not None:
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            settings.url, max_connections=max_connections, timeout=pool_timeout, **options))
    return aioredis.Redis.from_url(settings.url, **options)


def _async_cluster(url: str, max_connections: int | None, options: dict[str, Any]
                   ) -> aioredis.Redis:
    # The cluster client keeps a pool per node and retries MOVED/ASK itself; its own retry
    # policy replaces the connection's (the callers' timeouts stay).
    retry = options.pop("retry", None)
    if max_connections is not None:
        options["max_connections"] = max_connections
    if retry is not None:
        options["retry"] = retry
    return aioredis.RedisCluster.from_url(url, **options)  # type: ignore[return-value]


def celery_broker(settings: RedisSettings) -> tuple[str, dict[str, Any]]:
    """The Celery broker URL and the transport options it needs on this Redis (kombu's
    ``sentinel://`` transport with Sentinel: ``;``-separated sentinels, ``master_name``)."""
    if settings.sentinels:
        auth = f":{quote(settings.password, safe='')}@" if settings.password else ""
        url = ";".join(f"sentinel://{auth}{address}/{settings.db}"
                       for address in settings.sentinels)
        return url, {"master_name": settings.service_name,
                     "sentinel_kwargs": _sentinel_kwargs(settings)}
    if settings.url is None:
        raise RedisNotConfigured("Celery")
    return settings.url, {}


# ----------------------------------------------------------------- the bus on Redis Cluster
#
# Classic pub/sub on a Redis Cluster reaches every node of it: a message PUBLISHed on any node
# is heard by subscribers on every other. The bus (gateway/state/bus.py) keeps its one listener
# connection and pipelined publishes that way (a cluster client refuses PUBLISH in pipelines):
# its connections are plain ones to a node of the cluster, the first of the nodes the cluster
# client knows now that accepts one, so a node that died is left for another at the next
# (re)connect.

Addresses = Callable[[], list[tuple[str, int]]]


def _cluster_addresses(cluster: Any, settings: RedisSettings) -> Addresses:
    seed = redis.connection.parse_url(settings.url or "")
    fallback = [(seed.get("host", "localhost"), int(seed.get("port", 6379)))]

    def addresses() -> list[tuple[str, int]]:
        # Empty until the cluster client's first command has read the topology.
        return [(n.host, n.port) for n in cluster.get_nodes()] or fallback
    return addresses


def _any_node(cls: type, addresses: Addresses) -> type:
    class AnyNode(cls):  # type: ignore[misc, valid-type]
        def _connect(self) -> Any:
            return _first_that_connects(self, addresses, super()._connect)
    return AnyNode


def _any_node_async(cls: type, addresses: Addresses) -> type:
    class AnyNode(cls):  # type: ignore[misc, valid-type]
        async def _connect(self) -> None:
            error: Exception = ConnectionError("no node of the Redis Cluster known")
            for host, port in addresses():
                self.host, self.port = host, port
                try:
                    return await super()._connect()
                except (TimeoutError, OSError) as exc:
                    error = exc
            raise error
    return AnyNode


def _first_that_connects(conn: Any, addresses: Addresses, connect: Callable[[], Any]) -> Any:
    error: Exception = ConnectionError("no node of the Redis Cluster known")
    for host, port in addresses():
        conn.host, conn.port = host, port
        try:
            return connect()
        except OSError as exc:
            error = exc
    raise error


def sync_bus_client(settings: RedisSettings, client: redis.Redis, **options: Any
                    ) -> redis.Redis:
    """The client to publish bus messages with: ``client`` itself, or on Redis Cluster a
    plain client on any node of it (see above)."""
    if not is_cluster(client):
        return client
    addresses = _cluster_addresses(client, settings)
    host, port = addresses()[0]
    pool = redis.ConnectionPool(connection_class=_any_node(redis.Connection, addresses),
                                host=host, port=port, **options)
    return redis.Redis(connection_pool=pool)


def async_bus_client(settings: RedisSettings, client: aioredis.Redis, who: str,
                     **options: Any) -> aioredis.Redis:
    """The bus's asyncio client: on Redis Cluster a plain one on any node of the cluster
    ``client`` talks to (its topology is the list tried), else one like ``async_client``."""
    if not is_cluster(client):
        return async_client(settings, who, **options)
    addresses = _cluster_addresses(client, settings)
    host, port = addresses()[0]
    pool = aioredis.ConnectionPool(
        connection_class=_any_node_async(aioredis.Connection, addresses),
        host=host, port=port, **options)
    return aioredis.Redis(connection_pool=pool)


# ----------------------------------------------------------------- scripts

class _ClusterScript(redis.commands.core.Script):
    """On a cluster, a master that took over a slot (failover, migration) may not know a
    script yet, and redis-py's reload may go to another node: EVAL carries the script to the
    slot's master (which caches it for the next EVALSHA)."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        try:
            return super().__call__(keys, args, client)
        except redis.exceptions.NoScriptError:
            keys, args = list(keys or []), list(args or [])
            return (client or self.registered_client).eval(
                self.script, len(keys), *keys, *args)


class _AsyncClusterScript(redis.commands.core.AsyncScript):
    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        try:
            return await super().__call__(keys, args, client)
        except redis.exceptions.NoScriptError:
            keys, args = list(keys or []), list(args or [])
            return await (client or self.registered_client).eval(
                self.script, len(keys), *keys, *args)


def register_script(client: Any, script: str) -> Any:
    """``client.register_script(script)``, which on Redis Cluster falls back to EVAL when the
    slot's master does not know the script (see _ClusterScript)."""
    if isinstance(client, aioredis.RedisCluster):
        return _AsyncClusterScript(client, script)
    if isinstance(client, redis.RedisCluster):
        return _ClusterScript(client, script)
    return client.register_script(script)


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys are then tagged per app)."""
    return isinstance(client, (redis.RedisCluster, aioredis.RedisCluster))
