"""kombu's Redis Sentinel transport, following failovers as Clarion's own clients do.

kombu asks the sentinels for the master when it connects, but a worker connected to a master
that a graceful ``SENTINEL FAILOVER`` demoted keeps waiting for tasks there (and its acks land
there) until the sentinels reconfigure that server, seconds later, while the API already queues
on the new master. This transport gives kombu's connection pool the behaviour of
gateway/state/redis_client.py: no connection while a failover runs, every connection closed at
``+switch-master`` (the consumer then reconnects to the new master at once).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.url import _parse_url

from config.settings import RedisSettings
from gateway.state.redis_client import follow_failovers


class Channel(kombu_redis.SentinelChannel):
    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        pool = super()._sentinel_managed_pool(asynchronous)
        follow_failovers(pool, self._redis_settings())
        return pool

    def _redis_settings(self) -> RedisSettings:
        addresses = []
        for url in self.connection.client.alt:
            parsed = _parse_url(url)
            addresses.append(f"{parsed.hostname}:{parsed.port or 26379}")
        password = (getattr(self, "sentinel_kwargs", None) or {}).get("password")
        return RedisSettings(sentinels=addresses, service_name=self.master_name,
                             sentinel_password=password)


class Transport(kombu_redis.SentinelTransport):
    Channel = Channel
