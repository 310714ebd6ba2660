"""POST one webhook: resolve, vet every address (gateway/webhooks/ssrf.py), dial a vetted
address with the URL's host kept for the Host header and TLS (SNI + certificate check), never
follow redirects, bound the whole exchange by ``timeout``.

http.client is enough: one request per connection (no keep-alive, so a request is never
re-sent on a stale pooled connection), and the only thing it would do differently from a
plain client is the address it connects to.

``timeout`` is a total deadline (workers/providers/deadline.py): the name lookup, the
connect, the TLS handshake, the request and every read of the answer share it, so a receiver
that trickles its answer a byte at a time, stalls the handshake or never answers holds the
worker for ``timeout`` seconds and no longer; the attempt is then recorded as a timeout.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.webhooks.ssrf import IPNetwork, Refused, vet
from workers.providers import deadline

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


class _Connection(http.client.HTTPConnection):
    """One request on a socket already dialled (a vetted address, TLS done), its answer read
    within the deadline."""

    response_class = deadline.DeadlineResponse

    def __init__(self, host: str, port: int, sock: socket.socket, https: bool) -> None:
        super().__init__(host, port)
        self.default_port = 443 if https else 80  # the Host header omits the default port
        self.sock = sock

    def connect(self) -> None:
        raise http.client.NotConnected("the socket is dialled before the request")


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


def _resolve_within(host: str, port: int) -> list[str]:
    """:func:`resolve`, given up at the current deadline (``TimeoutError``).

    getaddrinfo cannot be interrupted, and a webhook's host names a DNS server its owner
    runs: the lookup gets a thread of its own (a daemon, so a worker never waits for it to
    exit), and a stalled one holds nothing but that thread until the resolver gives up.
    A shared pool of lookup threads would let one owner's stalled lookups hold up others'."""
    outcome: list[list[str] | BaseException] = []
    done = threading.Event()
    lookup = resolve  # looked up now: tests replace the module's resolve

    def run() -> None:
        try:
            outcome.append(lookup(host, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="webhook-dns", daemon=True).start()
    if not done.wait(deadline.cap(None)):
        raise TimeoutError("name lookup")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _left() -> float:
    current = deadline.current()
    assert current is not None, "only inside deadline.within()"
    return current.left()


def _dial(ip: str, port: int) -> socket.socket:
    sock = socket.create_connection((ip, port), _left())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _start_tls(sock: socket.socket, host: str) -> ssl.SSLSocket:
    # The socket's timeout bounds the whole handshake (one call), however it is trickled.
    sock.settimeout(_left())
    # server_hostname: SNI and the certificate are checked against the URL's host.
    return _ssl_context().wrap_socket(sock, server_hostname=host)


@dataclass(slots=True)
class _Target:
    host: str
    port: int
    https: bool
    path: str


def _target(url: str) -> _Target | Result:
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        return Result(status=None, error="refused", detail="invalid port")
    if parts.scheme not in ("http", "https") or not host:
        return Result(status=None, error="refused", detail="not an http(s) URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(host, port, https, path)


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
    with deadline.within(timeout):
        result = _post(url, body, headers, timeout, allowed_networks, max_response_bytes)
    result.latency_ms = round((time.monotonic() - started) * 1000, 2)
    return result


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float,
          allowed_networks: Sequence[IPNetwork], max_response_bytes: int) -> Result:
    target = _target(url)
    if isinstance(target, Result):
        return target
    try:
        addresses = _resolve_within(target.host, target.port)
    except TimeoutError:
        return Result(status=None, error="timeout", detail=f"no DNS answer within {timeout:g}s")
    except (OSError, UnicodeError) as exc:
        return Result(status=None, error="dns", detail=str(exc))
    try:
        vetted = vet(target.host, addresses, allowed_networks)
    except Refused as exc:
        return Result(status=None, error="refused", detail=str(exc))
    last_error: Result | None = None
    for ip in vetted:
        try:
            sock = _dial(ip, target.port)
        except TimeoutError:
            last_error = Result(status=None, error="timeout", detail="connect timed out", ip=ip)
            continue
        except OSError as exc:
            last_error = Result(status=None, error="connect", detail=str(exc), ip=ip)
            continue
        # Connected: from here on this address is the attempt (never post twice).
        try:
            return _exchange(sock, target, ip, body, headers, timeout, max_response_bytes)
        finally:
            sock.close()
    return last_error or Result(status=None, error="timeout", detail="no time left to connect")


def _exchange(sock: socket.socket, target: _Target, ip: str, body: bytes,
              headers: Mapping[str, str], timeout: float, max_response_bytes: int) -> Result:
    conn: http.client.HTTPConnection | None = None
    resp: http.client.HTTPResponse | None = None
    try:
        if target.https:
            try:
                sock = _start_tls(sock, target.host)
            except TimeoutError:
                return Result(status=None, error="timeout", ip=ip,
                              detail=f"TLS handshake not done within {timeout:g}s")
        conn = _Connection(target.host, target.port, sock, target.https)
        sock.settimeout(_left())  # sending the request
        conn.request("POST", target.path, body=body, headers=dict(headers))
        resp = conn.getresponse()
        data = resp.read(max_response_bytes) if max_response_bytes else b""
    except TimeoutError:
        return Result(status=None, error="timeout", detail=f"no answer within {timeout:g}s",
                      ip=ip)
    except ssl.SSLError as exc:
        return Result(status=None, error="tls", detail=str(exc), ip=ip)
    except (http.client.HTTPException, OSError) as exc:
        return Result(status=None, error="protocol", detail=f"{type(exc).__name__}: {exc}",
                      ip=ip)
    finally:
        if resp is not None:
            resp.close()
        if conn is not None:
            conn.close()
        else:
            sock.close()
    return Result(
        status=resp.status, body=data, ip=ip,
        retry_after=parse_retry_after(resp.getheader("Retry-After")),
        location=resp.getheader("Location"),
    )
