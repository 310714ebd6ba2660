"""A requests adapter whose connections keep to the calling thread's deadline
(workers/providers/deadline.py).

requests' ``timeout`` is urllib3's, applied to each socket operation: a server that sends its
answer a byte at a time never trips it. Under ``deadline.within(seconds)``, connections made
by :class:`DeadlineAdapter` connect, hand-shake and send within what is left of the deadline
and read their answer through :class:`~workers.providers.deadline.DeadlineResponse`; without
a deadline they behave as urllib3's own.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from workers.providers import deadline


class _Bounded:
    """Mixed into urllib3's connections: the timeout of each step is capped by the deadline
    (on HTTPS the handshake runs on the socket ``_new_conn`` returns, with its timeout)."""

    response_class = deadline.DeadlineResponse
    timeout: Any

    def _new_conn(self) -> Any:
        self.timeout = deadline.cap(self.timeout)
        return super()._new_conn()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.timeout = deadline.cap(self.timeout)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Bounded, HTTPConnection):
    pass


class _HTTPSConnection(_Bounded, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _bounded_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _bounded_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # An HTTP(S) proxy's manager makes the same pools; a SOCKS one has its own classes.
        return manager if proxy.lower().startswith("socks") else _bounded_pools(manager)
