"""The accept script's per-app log limits and idempotency keys, and History.page, against a
real redis-server."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import HistorySettings
from gateway.api.deliver_message import DeliverMessage
from gateway.state.chain_heads import ChainHeads
from gateway.state.history import History, parse_member
from gateway.state.idempotency import IdempotencyClaim, IdempotencyRecords, SeenRequest
from gateway.state.keys import Keys

DEPLOYMENT = {"max_events": 100, "retention": 600}


def _history(redis_client, key_prefix: str) -> tuple[History, Keys]:
    keys = Keys(f"{key_prefix}{uuid.uuid4().hex[:6]}:")
    return History(redis_client, keys, **DEPLOYMENT), keys


def _enqueue(h: History, prefix: str, events, limits=None, claim=None):
    message = DeliverMessage(prefix).pieces("1", events)
    return h.accept_and_enqueue("1", events, f"{prefix}live", message.head, message.body,
                                message.tail, limits, claim)


def test_an_apps_own_limits_bound_its_log(redis_client, key_prefix) -> None:
    h, keys = _history(redis_client, key_prefix)
    own = HistorySettings(max_events=2, retention=30)
    for i in range(5):
        _enqueue(h, keys.prefix, [("c", "e", str(i), None)], own)
        h.accept("2", [("c", "e", str(i), None)])  # another app: the deployment's limits
    mine = [parse_member(m).data for m in redis_client.zrange(keys.history("1", "c"), 0, -1)]
    theirs = redis_client.zcard(keys.history("2", "c"))
    assert (mine, theirs) == (["3", "4"], 5)
    assert 0 < redis_client.ttl(keys.history("1", "c")) <= 30
    assert 30 < redis_client.ttl(keys.history("2", "c")) <= 600
    # The counter outlives any retention, and the shared pending list keeps the deployment's.
    assert redis_client.ttl(keys.serial("1", "c")) > 600
    assert 30 < redis_client.ttl(keys.live_pending) <= 600


def test_a_long_app_retention_keeps_its_counter_as_long(redis_client, key_prefix) -> None:
    h, keys = _history(redis_client, key_prefix)
    h.accept("1", [("c", "e", "x", None)], HistorySettings(max_events=5, retention=200_000))
    assert redis_client.ttl(keys.serial("1", "c")) > 199_000
    assert redis_client.ttl(keys.history("1", "c")) > 199_000


def _claim(keys: Keys, key: str, fingerprint: str = "f1", response: bytes | None = b"{}",
           window_ms: int = 60_000) -> IdempotencyClaim:
    return IdempotencyClaim(keys.idempotency("1", key), fingerprint, response, window_ms)


def test_a_claimed_key_accepts_once_with_or_without_the_queue(redis_client, key_prefix):
    h, keys = _history(redis_client, key_prefix)
    events = [("a", "e", "1", None), ("b", "e", "2", None)]
    serials, queued = _enqueue(h, keys.prefix, events, claim=_claim(keys, "k"))
    assert queued and len(serials) == 2
    seen = _enqueue(h, keys.prefix, events, claim=_claim(keys, "k"))
    assert seen == SeenRequest("f1", b"{}", None)
    assert h.accept("1", events, claim=_claim(keys, "k", "f2")) == SeenRequest("f1", b"{}", None)
    assert redis_client.llen(f"{keys.prefix}live") == 1
    assert redis_client.llen(keys.live_pending) == 0
    assert [redis_client.zcard(keys.history("1", c)) for c in "ab"] == [1, 1]
    assert 59_000 < redis_client.pttl(keys.idempotency("1", "k")) <= 60_000
    # Another key is another request.
    assert isinstance(h.accept("1", events, claim=_claim(keys, "k2")), list)


def test_a_response_not_known_yet_is_in_flight_until_saved(redis_client, key_prefix):
    h, keys = _history(redis_client, key_prefix)
    records = IdempotencyRecords(redis_client, keys)
    claim = _claim(keys, "k", response=None)
    assert isinstance(h.accept("1", [("c", "e", "1", None)], claim=claim), list)
    seen = h.accept("1", [("c", "e", "1", None)], claim=claim)
    assert isinstance(seen, SeenRequest) and seen.response is None
    assert 0 <= seen.age_us < 5_000_000
    assert records.save_response(claim.key, b'{"a":1}') == b'{"a":1}'
    # The first saved wins: a late saver gets it back.
    assert records.save_response(claim.key, b'{"a":2}') == b'{"a":1}'
    assert h.accept("1", [("c", "e", "1", None)], claim=claim) == SeenRequest(
        "f1", b'{"a":1}', None)
    assert set(redis_client.hgetall(claim.key)) == {b"f", b"r"}


def test_keys_of_apps_never_collide() -> None:
    """App ids may hold ":" and keys may too: the separator is one app ids cannot hold."""
    keys = Keys("p:")
    assert keys.idempotency("1:a", "b") != keys.idempotency("1", "a:b")


def test_saving_into_an_expired_record_writes_nothing(redis_client, key_prefix):
    _, keys = _history(redis_client, key_prefix)
    records = IdempotencyRecords(redis_client, keys)
    key = keys.idempotency("1", "gone")
    assert records.save_response(key, b"{}") == b"{}"
    assert not redis_client.exists(key)


@given(counts=st.lists(st.integers(1, 4), min_size=1, max_size=6),
       window=st.integers(1, 86_400))
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_repeats_never_accept_whatever_the_request(redis_client, key_prefix, counts, window):
    """Requests of any size with one key: the first is logged, no repeat adds anything."""
    h, keys = _history(redis_client, key_prefix)
    for n, count in enumerate(counts):
        events = [(f"c{i}", "e", str(n), None) for i in range(count)]
        out = _enqueue(h, keys.prefix, events, claim=_claim(keys, "one", f"f{n}",
                                                           window_ms=window * 1000))
        assert isinstance(out, SeenRequest) == (n > 0)
    logged = sum(redis_client.zcard(keys.history("1", f"c{i}")) for i in range(4))
    assert logged == counts[0]


def test_page_reads_events_position_and_gap(redis_client, key_prefix):
    h, keys = _history(redis_client, key_prefix)
    accepted = h.accept("1", [("c", "e", str(i), None) for i in range(5)])
    page = h.page("1", "c", 0, 2)
    assert [e.data for e in page.events] == ["0", "1"]
    assert (page.serial, page.has_more, page.gap, page.next) == (
        accepted[-1].serial, True, None, accepted[1].serial)
    last = h.page("1", "c", accepted[2].serial, 2)
    assert [e.data for e in last.events] == ["3", "4"] and not last.has_more
    redis_client.zremrangebyrank(keys.history("1", "c"), 0, 1)  # "0" and "1" trimmed
    assert h.page("1", "c", accepted[0].serial, 10).gap == "expired"
    assert h.page("1", "c", accepted[1].serial, 10).gap is None
    assert h.page("1", "c", accepted[-1].serial + 1, 10).gap == "reset"
    assert h.page("1", "none", 0, 10).gap is None


def _floored(redis_client, key_prefix: str) -> tuple[History, Keys]:
    """History as the API has it on Redis Cluster: keys tagged per app, heads remembered."""
    keys = Keys(f"{key_prefix}{uuid.uuid4().hex[:6]}:", cluster=True)
    h = History(redis_client, keys, **DEPLOYMENT)
    h.heads = ChainHeads()
    return h, keys


def test_a_counter_rolled_back_by_a_failover_chains_to_the_lost_event(
    redis_client, key_prefix
) -> None:
    """A replica promoted without the master's last events has the channel's counter behind:
    the next event names the lost one as its predecessor (readers who missed it are told),
    in the log and in what the task carries; a counter that moved on is left alone."""
    h, keys = _floored(redis_client, key_prefix)
    first = _enqueue(h, keys.prefix, [("c", "e", "1", None), ("d", "e", "1", None)])
    (c1, _), (d1, _) = first[0]
    lost = h.accept("1", [("c", "e", "lost", None)])[0]
    # The failover: the promoted replica had the counter and log as after the first event.
    redis_client.set(keys.serial("1", "c"), c1)
    redis_client.zremrangebyscore(keys.history("1", "c"), lost.serial, lost.serial)
    links, _ = _enqueue(h, keys.prefix, [("c", "e", "2", None), ("d", "e", "2", None)])
    assert links[0][1] == lost.serial  # chained to the lost event: the gap is seen
    assert links[1][1] == d1  # d lost nothing
    logged = [parse_member(m) for m in redis_client.zrange(keys.history("1", "c"), 0, -1)]
    assert [(e.data, e.prev) for e in logged] == [("1", 0), ("2", lost.serial)]


def test_floors_are_not_passed_without_cluster(redis_client, key_prefix) -> None:
    """Alone (or on Sentinel, which puts the heads back at the switch) the accept script gets
    no floors: a counter set back is taken as it is."""
    keys = Keys(f"{key_prefix}{uuid.uuid4().hex[:6]}:")
    h = History(redis_client, keys, **DEPLOYMENT)
    h.heads = ChainHeads()
    first = h.accept("1", [("c", "e", "1", None)])[0]
    h.accept("1", [("c", "e", "lost", None)])
    redis_client.set(keys.serial("1", "c"), first.serial)
    assert h.accept("1", [("c", "e", "2", None)])[0].prev == first.serial
