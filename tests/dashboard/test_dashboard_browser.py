"""The dashboard in a real browser (Debian's headless Chromium through playwright-core, as
tests/continuity does) against a real deployment: sign-in, the debug console showing a
pusher-js client and an SDK trigger, webhook attempts and a replay, CSRF.

Set CLARION_DASHBOARD_SCREENSHOTS=docs/dashboard to refresh the screenshots of the docs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _harness import Cluster
from _harness.browser import BrowserDriver, require_chromium

from tests.continuity.continuity_harness import Fleet
from tests.dashboard.conftest import TOKEN
from tests.webhooks.harness import Answer, Received, Receiver

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).parent / "js" / "driver.mjs"
SHOTS = os.environ.get("CLARION_DASHBOARD_SCREENSHOTS")


class Browser(BrowserDriver):
    """js/driver.mjs: one page of headless Chromium, driven by commands."""

    def __init__(self, node_modules: Path) -> None:
        super().__init__(DRIVER, node_modules)

    def texts(self, selector: str) -> list[str]:
        return self.ask("texts", selector=selector)["texts"]  # type: ignore[no-any-return]

    def screenshot(self, name: str, tmp: Path) -> None:
        where = Path(SHOTS) if SHOTS else tmp
        where.mkdir(parents=True, exist_ok=True)
        self.ask("screenshot", path=str(where / f"{name}.png"))


@pytest.fixture(scope="module")
def browser(node_modules: Path) -> Iterator[Browser]:
    require_chromium()
    b = Browser(node_modules)
    yield b
    b.close()


@pytest.fixture
def pusher_js(node_modules: Path, cluster: Cluster) -> Iterator[Callable[[], Fleet]]:
    """``connect()``: one pusher-js client in Node, connected to the deployment's node."""
    made: list[Fleet] = []

    def connect() -> Fleet:
        made.append(Fleet(node_modules, cluster.node_ports[0], 1, resume=False))
        return made[-1]

    yield connect
    for f in made:
        f.close()


def _signed_in(browser: Browser, cluster: Cluster, page: str) -> None:
    browser.ask("open", url=f"{cluster.api_url}/dashboard#{page}")
    if browser.ask("visible", selector="#signin-form")["visible"]:
        browser.ask("fill", selector="#token", value=TOKEN)
        browser.ask("click", selector="#signin-form button")
    browser.until(lambda: browser.ask("visible", selector="#signout")["visible"], "signed in")


def _occupied(channel: str) -> Callable[[Received], bool]:
    return lambda r: any(e.get("channel") == channel for e in r.json["events"])


def test_sign_in_refuses_a_wrong_token_and_admits_the_right_one(
        cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    browser.ask("open", url=f"{cluster.api_url}/dashboard")
    browser.until(lambda: browser.ask("visible", selector="#signin-form")["visible"],
                  "the sign-in form")
    browser.ask("fill", selector="#token", value="not-the-admin-token")
    browser.ask("click", selector="#signin-form button")
    browser.until(lambda: browser.texts("#signin-error") == ["Wrong admin token."],
                  "the refusal")
    assert not any(c["name"] == "clarion_dashboard" for c in browser.ask("cookies")["cookies"])
    assert not browser.ask("visible", selector="#apps")["visible"]

    browser.ask("fill", selector="#token", value=TOKEN)
    browser.ask("click", selector="#signin-form button")
    browser.until(lambda: browser.texts("#apps tbody tr[data-app='1'] td:first-child") == ["1"],
                  "the apps overview")
    (cookie,) = [c for c in browser.ask("cookies")["cookies"] if c["name"] == "clarion_dashboard"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    # The cookie cannot be read by scripts in the page.
    assert "clarion_dashboard" not in browser.ask("evaluate", script="document.cookie")["value"]


def test_console_shows_a_pusher_js_client_and_an_sdk_trigger(
        cluster: Cluster, browser: Browser, pusher_js: Callable[[], Fleet], tmp_path: Path) -> None:
    _signed_in(browser, cluster, "/apps/1/console")
    browser.until(lambda: "live" in "".join(browser.texts("#log-state")), "the live console")
    time.sleep(1.5)  # the node and the API have seen the app watched
    pusher_js().subscribe(["browser-room"])
    rows = "#log tbody tr[data-kind='{}'] td.summary"
    browser.until(lambda: any("browser-room" in t
                              for t in browser.texts(rows.format("subscribed"))),
                  "the pusher-js subscription")
    assert browser.texts(rows.format("connected")), "the connection"

    cluster.pusher().trigger("browser-room", "sdk-event", {"hello": "console"})
    browser.until(lambda: any("sdk-event → browser-room" in t
                              for t in browser.texts(rows.format("api_event"))), "the SDK trigger")
    # The event creator publishes like the REST API; the client receives it.
    browser.ask("fill", selector="#ev-channel", value="browser-room")
    browser.ask("fill", selector="#ev-name", value="from-the-page")
    browser.ask("click", selector="#ev-send")
    browser.until(lambda: any("from-the-page → browser-room" in t and "via dashboard" in t
                              for t in browser.texts(rows.format("api_event"))), "the sent event")
    # Newest first; the filter narrows the rows down.
    kinds = browser.texts("#log tbody tr td:nth-child(2)")
    assert kinds.index("api_event") < kinds.index("subscribed")
    browser.ask("fill", selector="#log-filter", value="sdk-event")
    browser.until(lambda: (t := browser.texts("#log tbody tr td.summary"))
                  and all("sdk-event" in x for x in t), "the filtered rows")
    browser.ask("fill", selector="#log-filter", value="")
    browser.screenshot("console", tmp_path)
    # The overview counts the client, the channel and the events.
    browser.ask("open", url=f"{cluster.api_url}/dashboard#/")
    cell = "#apps tr[data-app='1'] td[data-col='{}']"
    browser.until(lambda: browser.texts(cell.format("connections")) == ["1"]
                  and float(browser.texts(cell.format("events_per_second"))[0]) > 0,
                  "the live counts", timeout=20)
    assert browser.texts(cell.format("channels")) == ["1"]
    browser.screenshot("overview", tmp_path)
    browser.ask("open", url=f"{cluster.api_url}/dashboard#/apps/1/channels/browser-room")
    browser.until(lambda: browser.texts("#channel-subs") == ["1"], "the channel's subscriber")
    assert any("from-the-page" in t for t in browser.texts("#history tbody tr"))
    browser.screenshot("channel", tmp_path)


def test_webhook_failing_then_succeeding_shows_its_attempts(
        cluster: Cluster, browser: Browser, receiver: Receiver, pusher_js: Callable[[], Fleet],
        tmp_path: Path) -> None:
    mine = _occupied("wh-retry")
    answered: list[int] = []

    def behaviour(r: Received) -> Answer:
        if not mine(r):
            return 200, {}, b"ok", 0.0
        answered.append(500 if not answered else 200)
        return answered[-1], {}, b"not yet" if answered[-1] == 500 else b"ok", 0.0

    receiver.behaviour = behaviour
    pusher_js().subscribe(["wh-retry"])
    assert receiver.wait_for(lambda rc: any(mine(r) and r.answered == 200 for r in rc.requests))
    delivery = next(r.delivery_id for r in receiver.requests if mine(r))

    _signed_in(browser, cluster, "/apps/1/webhooks")
    browser.ask("click", selector="#wh-status button[data-status='delivered']")
    card = f".delivery[data-id='{delivery}']"
    attempts = browser.until(lambda: len(t := browser.texts(f"{card} tr.attempt")) == 2 and t,
                             "both attempts")
    assert "500" in attempts[0] and "200" in attempts[1]
    browser.screenshot("webhooks", tmp_path)


def test_a_dead_delivery_is_replayed_from_the_page(
        cluster: Cluster, browser: Browser, receiver: Receiver,
        pusher_js: Callable[[], Fleet]) -> None:
    mine = _occupied("wh-dead")
    state = {"up": False}
    receiver.behaviour = lambda r: ((200 if state["up"] or not mine(r) else 503), {}, b"", 0.0)
    pusher_js().subscribe(["wh-dead"])
    # Two attempts (the schedule retries once), then dead.
    assert receiver.wait_for(lambda rc: sum(1 for r in rc.requests if mine(r)) == 2)
    delivery = next(r.delivery_id for r in receiver.requests if mine(r))

    _signed_in(browser, cluster, "/apps/1/webhooks")
    browser.ask("click", selector="#wh-status button[data-status='dead']")
    card = f".delivery[data-id='{delivery}']"
    browser.until(lambda: browser.texts(f"{card} .replay"), "the dead delivery")
    state["up"] = True
    browser.ask("click", selector=f"{card} .replay")
    assert receiver.wait_for(lambda rc: any(mine(r) and r.answered == 200 for r in rc.requests))
    browser.ask("click", selector="#wh-status button[data-status='delivered']")
    attempts = browser.until(lambda: len(t := browser.texts(f"{card} tr.attempt")) == 3 and t,
                             "the replayed attempt")
    assert "(replay)" in attempts[2] and "200" in attempts[2]


def test_an_action_without_the_csrf_token_is_refused(
        cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    _signed_in(browser, cluster, "/apps/1/stats")
    # What a forged request could do: send the cookie, but not the token it cannot read.
    script = """fetch('/dashboard/api/apps/1/events', {method: 'POST', credentials: 'include',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({channel: 'forged', name: 'e', data: '{}'})})
        .then(async (r) => [r.status, await r.json()])"""
    status, body = browser.ask("evaluate", script=script)["value"]
    assert status == 403 and "X-CSRF-Token" in body["error"]
    # The page's own action carries it: the secret is revealed.
    browser.until(lambda: browser.texts("#secret"), "the settings")
    assert "app-secret" not in browser.texts("#secret")[0]
    browser.ask("click", selector="#reveal")
    browser.until(lambda: browser.texts("#secret") == ["app-secret"], "the revealed secret")
    browser.until(lambda: len(browser.texts("#charts figure")) == 3, "the charts")
    browser.screenshot("stats", tmp_path)
