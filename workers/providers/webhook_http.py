"""POST one webhook: resolve, vet every address (gateway/webhooks/ssrf.py), dial a vetted
address with the URL's host kept for the Host header and TLS (SNI + certificate check), never
follow redirects, bound the whole exchange by ``timeout``.

http.client is enough: one request per connection (no keep-alive, so a request is never
re-sent on a stale pooled connection), and the only thing it would do differently from a
plain client is the address it connects to.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.webhooks.ssrf import IPNetwork, Refused, vet

_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


@dataclass(slots=True)
class Result:
    status: int | None
    body: bytes = b""
    latency_ms: float = 0.0
    # None on an HTTP answer; else one of: refused, dns, connect, timeout, tls, protocol.
    error: str | None = None
    detail: str = ""
    ip: str | None = None
    retry_after: float | None = None
    location: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # server_hostname: SNI and the certificate are checked against the URL's host.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allowed_networks: Sequence[IPNetwork] = (),
    max_response_bytes: int = 2048,
) -> Result:
    started = time.monotonic()
    deadline = started + timeout

    def done(**kw: object) -> Result:
        return Result(latency_ms=round((time.monotonic() - started) * 1000, 2), **kw)  # type: ignore[arg-type]

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        return done(status=None, error="refused", detail="invalid port")
    if parts.scheme not in ("http", "https") or not host:
        return done(status=None, error="refused", detail="not an http(s) URL")
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        return done(status=None, error="dns", detail=str(exc))
    try:
        vetted = vet(host, addresses, allowed_networks)
    except Refused as exc:
        return done(status=None, error="refused", detail=str(exc))

    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    last_error: Result | None = None
    for ip in vetted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn: http.client.HTTPConnection
        if https:
            conn = _PinnedHTTPS(host, port, ip, remaining, _ssl_context())
        else:
            conn = _PinnedHTTP(host, port, ip, remaining)
        try:
            try:
                conn.connect()
            except ssl.SSLError as exc:
                return done(status=None, error="tls", detail=str(exc), ip=ip)
            except TimeoutError:
                last_error = done(status=None, error="timeout", detail="connect timed out", ip=ip)
                continue
            except OSError as exc:
                last_error = done(status=None, error="connect", detail=str(exc), ip=ip)
                continue
            # Connected: from here on this address is the attempt (never post twice).
            try:
                conn.request("POST", path, body=body, headers=dict(headers))
                assert conn.sock is not None
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
                resp = conn.getresponse()
                data = resp.read(max_response_bytes) if max_response_bytes else b""
            except TimeoutError:
                return done(status=None, error="timeout",
                            detail=f"no answer within {timeout:g}s", ip=ip)
            except ssl.SSLError as exc:
                return done(status=None, error="tls", detail=str(exc), ip=ip)
            except (http.client.HTTPException, OSError) as exc:
                return done(status=None, error="protocol",
                            detail=f"{type(exc).__name__}: {exc}", ip=ip)
            if time.monotonic() > deadline:
                return done(status=None, error="timeout",
                            detail=f"answer took longer than {timeout:g}s", ip=ip)
            return done(
                status=resp.status, body=data, ip=ip,
                retry_after=parse_retry_after(resp.getheader("Retry-After")),
                location=resp.getheader("Location"),
            )
        finally:
            conn.close()
    return last_error or done(status=None, error="timeout", detail="no time left to connect")
