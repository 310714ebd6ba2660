"""The resume extension's pure parts (docs/resume.md): the subscribe request and the decision
over the chain of serials."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import frames, messages
from gateway.protocol.errors import InvalidMessage
from gateway.protocol.resume import EXPIRED, RESET, failure


@dataclass(frozen=True)
class E:
    serial: int
    prev: int


def _subscribe(clarion: object) -> messages.Subscribe:
    frame = {"event": "pusher:subscribe", "data": {"channel": "c", "clarion": clarion}}
    msg = messages.parse(json.dumps(frame))
    assert isinstance(msg, messages.Subscribe)
    return msg


def test_resume_request_parsed() -> None:
    assert _subscribe({"v": 1}).resume == messages.ResumeRequest()
    assert _subscribe({"v": 1, "serial": 5, "socket_id": "1.2"}).resume == (
        messages.ResumeRequest(5, "1.2"))
    plain = messages.parse('{"event":"pusher:subscribe","data":{"channel":"c"}}')
    assert isinstance(plain, messages.Subscribe) and plain.resume is None


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                 st.fixed_dictionaries({"v": st.integers().filter(lambda v: v != 1)}),
                 st.fixed_dictionaries({"v": st.sampled_from([True, 1.0, "1"])})))
def test_anything_but_version_1_is_a_plain_subscription(clarion: object) -> None:
    assert _subscribe(clarion).resume is None


@pytest.mark.parametrize("bad", [{"serial": "5"}, {"serial": -1}, {"serial": 2**53},
                                 {"serial": True}, {"serial": 1.5}, {"socket_id": "x"},
                                 {"socket_id": 12}])
def test_bad_resume_requests_are_refused_with_a_reason(bad: dict) -> None:
    with pytest.raises(InvalidMessage, match=next(iter(bad))):
        _subscribe({"v": 1, **bad})


def test_a_chain_that_continues_from_the_client_resumes() -> None:
    assert failure(10, 10, []) is None
    assert failure(10, 30, [E(20, 10), E(30, 20)]) is None


def test_a_chain_trimmed_after_the_client_expired() -> None:
    assert failure(10, 30, [E(30, 20)]) == EXPIRED
    assert failure(10, 30, []) == EXPIRED


def test_a_chain_from_another_history_is_a_reset() -> None:
    assert failure(10, 30, [E(30, 0)]) == RESET  # the counter started again
    assert failure(10, 30, [E(30, 5)]) == RESET  # rolled back below the client, went on
    assert failure(40, 30, [E(30, 20)]) == RESET  # the channel is behind the client


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=30, unique=True).map(sorted),
       st.data())
def test_failure_agrees_with_the_chain(serials: list[int], data: st.DataObject) -> None:
    """Over a full chain, resuming at any serial of it works; with its head trimmed at k,
    resuming before k expires."""
    chain = [E(s, p) for s, p in zip(serials, [0, *serials[:-1]], strict=True)]
    i = data.draw(st.integers(0, len(chain) - 1))
    after = chain[i].serial
    assert failure(after, serials[-1], chain[i + 1:]) is None
    k = data.draw(st.integers(i + 2, len(chain))) if i + 2 <= len(chain) else None
    if k is not None and k < len(chain):
        assert failure(after, serials[-1], chain[k:]) == EXPIRED


def test_frames_carry_positions_only_when_asked() -> None:
    assert json.loads(frames.subscription_succeeded("c")) == {
        "event": "pusher_internal:subscription_succeeded", "channel": "c", "data": "{}"}
    assert json.loads(frames.subscription_succeeded("c", 7))["serial"] == 7
    assert json.loads(frames.channel_event("e", "c", "d", serial=9)) == {
        "event": "e", "channel": "c", "data": "d", "serial": 9}
    assert json.loads(frames.resume_failed("c", EXPIRED, 3)) == {
        "event": "clarion:resume_failed", "channel": "c",
        "data": '{"reason":"expired","serial":3}'}
