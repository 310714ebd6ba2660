"""Redis clients made from ``[redis]``: on a URL, or on the master a set of sentinels names.

Every process makes its clients here (API, workers, WebSocket node, CLI), so that with
Sentinel they all follow a failover the same way: a Sentinel-managed connection asks the
sentinels for the master's address each time it connects, a connection to a master that died
fails (and is made again on the next command), and one to a master demoted to replica fails on
its first write (redis-py turns READONLY into a connection error). Callers keep their own
timeouts and retry policies: a request still gets 503 fast, the bus listener still reconnects
and catches up from the logs.

The Celery broker on Sentinel is kombu's ``sentinel://`` transport (:func:`celery_broker`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from config.settings import RedisSettings

# A sentinel that does not answer within this long is skipped for the next one: discovering
# the master must not take a request's whole deadline.
SENTINEL_TIMEOUT = 0.5


class RedisNotConfigured(ValueError):
    """Neither ``redis.url`` nor ``redis.sentinels`` is set."""

    def __init__(self, who: str) -> None:
        super().__init__(f"redis.url (or redis.sentinels) is not set: {who} needs Redis")


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel-managed connections in a bounded pool that makes callers wait for a free one
    (the WebSocket node's command pool)."""


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
            settings.service_name, **_master_kwargs(settings), **options)
    if settings.url is None:
        raise RedisNotConfigured(who)
    return redis.Redis.from_url(settings.url, **options)


def async_client(settings: RedisSettings, who: str, *, max_connections: int | None = None,
                 pool_timeout: float = 5.0, **options: Any) -> aioredis.Redis:
    """An asyncio client; with ``max_connections`` its pool is bounded and blocking (callers
    wait up to ``pool_timeout`` for a free connection)."""
    if settings.sentinels:
        manager = aiosentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
        if max_connections is not None:
            options.update(connection_pool_class=_BlockingSentinelPool,
                           max_connections=max_connections, timeout=pool_timeout)
        return manager.master_for(  # type: ignore[no-any-return]
            settings.service_name, **_master_kwargs(settings), **options)
    if settings.url is None:
        raise RedisNotConfigured(who)
    if max_connections is not None:
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            settings.url, max_connections=max_connections, timeout=pool_timeout, **options))
    return aioredis.Redis.from_url(settings.url, **options)


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
