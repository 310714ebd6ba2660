"""In a real browser whose WebSockets are blocked: Debian's headless Chromium (playwright-core)
opens a page with pusher-js's web build at its default transports; pusher-js falls back by
itself to xhr_streaming on the node's port, and the page renders the events it receives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness.browser import BrowserDriver, Site, require_chromium
from _harness.cluster import APP_KEY
from _harness.node import npm_modules

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
NPM_PACKAGES = ["pusher-js@8", "playwright-core@1"]


@pytest.fixture(scope="module")
def browser_modules() -> Path:
    return npm_modules("xhr-browser", NPM_PACKAGES, "to drive Chromium")


def page_site(node_modules: Path, config: dict[str, Any]) -> Site:
    """The app's page and pusher-js (another origin than the node's: every request to the
    node is cross-origin, preflighted)."""
    return Site({
        "/": (HERE / "browser" / "index.html", "text/html"),
        "/pusher.min.js": (node_modules / "pusher-js" / "dist" / "web" / "pusher.min.js",
                           "text/javascript"),
    }, config)


class Browser(BrowserDriver):
    """js/browser.mjs: headless Chromium through playwright-core."""

    def __init__(self, node_modules: Path) -> None:
        super().__init__(HERE / "js" / "browser.mjs", node_modules)


@pytest.fixture
def browser(browser_modules: Path) -> Iterator[Browser]:
    require_chromium()
    b = Browser(browser_modules)
    yield b
    b.close()


def test_a_page_without_websockets_falls_back_and_receives_events(
        cluster, browser_modules, browser) -> None:
    channel = "browser-fallback"
    port = cluster.node_ports[0]
    site = page_site(browser_modules, {"key": APP_KEY, "port": port, "channel": channel})
    sdk = cluster.pusher()
    try:
        browser.ask("open", url=site.url)
        seen = browser.look_until(lambda s: s["subscribed"] == 1, "the subscription", 40)
        assert seen["websocket"] == "undefined"
        assert seen["state"] == "connected" and seen["transport"] == "xhr_streaming"
        for n in range(20):
            sdk.trigger(channel, "seq", {"n": n})
        seen = browser.look_until(lambda s: len(s["items"]) >= 20, "20 events")
        requests = browser.ask("requests")["lines"]
    finally:
        site.close()
    assert seen["items"] == list(range(20))
    assert any(r.endswith("/xhr_streaming") for r in requests)
    assert any(r.startswith("POST") and r.endswith("/xhr_send") for r in requests)
    print(f"\n{browser.version}: fell back to {seen['transport']}, 20 events rendered")
