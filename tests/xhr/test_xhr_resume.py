"""The resume extension (docs/resume.md) over an HTTP transport: it lives in the Connection,
so a polling session asks for positions and resumes exactly as a WebSocket does."""

from __future__ import annotations

import time

import pytest

from tests.xhr.xhr_harness import messages, open_polling

pytestmark = pytest.mark.slow


def _until(session, match, timeout: float = 10.0) -> list[dict]:
    """Poll until a message ``match``es; every message seen, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += messages(session.poll()[1])
        if any(match(m) for m in seen):
            return seen
    raise AssertionError(f"never seen; got {seen}")


def test_resume_over_polling(cluster) -> None:
    port, sdk, channel = cluster.node_ports[0], cluster.pusher(), "resume-http"
    first, first_id = open_polling(port, "8/resume01")
    first.message("pusher:subscribe", {"channel": channel, "clarion": {"v": 1}})
    ok = _until(first, lambda m: m["event"] == "pusher_internal:subscription_succeeded")
    assert "serial" in ok[-1]
    sdk.trigger(channel, "e1", {"n": 1})
    got = _until(first, lambda m: m["event"] == "e1")
    s1 = got[-1]["serial"]
    # The client goes away; events go on meanwhile.
    for n in (2, 3):
        sdk.trigger(channel, f"e{n}", {"n": n})
    time.sleep(0.5)
    again, _ = open_polling(port, "8/resume02")
    again.message("pusher:subscribe", {"channel": channel, "clarion": {
        "v": 1, "serial": s1, "socket_id": first_id}})
    seen = _until(again, lambda m: m["event"] == "e3")
    events = [m for m in seen if m["event"].startswith("e")]
    assert [m["event"] for m in events] == ["e2", "e3"]
    assert events[0]["serial"] > s1 and events[1]["serial"] > events[0]["serial"]
    assert seen[0]["event"] == "pusher_internal:subscription_succeeded"
    assert seen[0]["serial"] == s1
