"""A webhook receiver that trickles its answer, never answers, stalls the TLS handshake or
drops the connect: each attempt by a real webhooks worker ends at ``webhooks.timeout`` (plus
scheduling slack) and is recorded as a timeout, then retried on the schedule."""

from __future__ import annotations

import ssl
import time

import pytest
import redis
import trustme
from _harness.slow_peer import SlowPeer

from gateway.state.keys import Keys
from gateway.webhooks.store import Store
from tests.webhooks.conftest import Nodes
from tests.webhooks.harness import make_settings, webhook

pytestmark = pytest.mark.fault

TIMEOUT = 2.0
# A loaded 2-core machine schedules late now and then; without a total deadline a trickled
# answer holds the worker for minutes.
SLACK = 0.75


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA, tmp_path, monkeypatch) -> ssl.SSLContext:
    """A TLS context for the peer; workers started afterwards trust its CA."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


# (peer mode, TLS, worker pool): threads is what `clarion up` runs webhooks on.
CASES = [
    ("trickle", False, "threads"),
    ("trickle_body", False, "threads"),
    ("hang", False, "threads"),
    ("blackhole", False, "threads"),
    ("trickle", True, "threads"),
    ("stall", True, "threads"),
    ("trickle", False, "prefork"),
]


@pytest.mark.parametrize(("mode", "tls", "pool"), CASES,
                         ids=[f"{m}{'-tls' if t else ''}-{p}" for m, t, p in CASES])
def test_each_attempt_ends_at_the_deadline(mode, tls, pool, request, redis_url, key_prefix,
                                           start_worker, loop):
    tls_context = request.getfixturevalue("server_tls") if tls else None
    peer = SlowPeer(mode, interval=1.0, tls=tls_context)
    try:
        settings = make_settings(redis_url, key_prefix, [webhook(peer.url(), "cache_miss")],
                                 timeout=TIMEOUT, retry_schedule=[0.3])
        start_worker(settings, pool=pool)
        nodes = Nodes(settings)

        async def report() -> None:
            nodes.node("A").cache_miss("1", "cache-x")
            await nodes.close()

        loop.run_until_complete(report())
        attempts = wait_for_attempts(settings, 2, timeout=2 * (TIMEOUT + SLACK) + 5)
        for a in attempts:
            assert a["error"] == "timeout", attempts
            assert a["latency_ms"] <= (TIMEOUT + SLACK) * 1000, attempts
        if mode != "blackhole":  # else nothing was ever accepted
            held = [e.held for e in peer.exchanges]
            assert len(held) == 2, held
            assert all(h is not None and h <= TIMEOUT + SLACK for h in held), held
    finally:
        peer.close()


def wait_for_attempts(settings, count: int, timeout: float) -> list[dict]:
    store = Store(redis.Redis.from_url(settings.redis.url), Keys(settings.redis.key_prefix),
                  settings)
    deadline = time.monotonic() + timeout
    attempts: list[dict] = []
    while time.monotonic() < deadline:
        deliveries = [store.load(d.id) for st in ("dead", "failed")
                      for d in store.list("1", st)]
        attempts = [a for d in deliveries if d for a in d.attempts]
        if len(attempts) >= count:
            return attempts
        time.sleep(0.05)
    raise AssertionError(f"{len(attempts)} of {count} attempts finished in {timeout:.1f}s: "
                         f"{attempts}")
