"""(3) In a real browser: a page with pusher-js (its web build) and the resume extension (as
an ES module), served on localhost, in Debian's headless Chromium driven by playwright-core.
The test cuts the page's connection; the events published meanwhile are rendered on the page
after it reconnects, each once, in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness.browser import BrowserDriver, Site, require_chromium
from _harness.cluster import APP_KEY

from tests.continuity.continuity_harness import EXTENSION, Publisher

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


def page_site(node_modules: Path, config: dict[str, Any]) -> Site:
    """The app's page, pusher-js and the resume extension."""
    return Site({
        "/": (HERE / "browser" / "index.html", "text/html"),
        "/pusher.min.js": (node_modules / "pusher-js" / "dist" / "web" / "pusher.min.js",
                           "text/javascript"),
        "/clarion-resume.mjs": (EXTENSION / "index.mjs", "text/javascript"),
    }, config)


class Browser(BrowserDriver):
    """js/browser.mjs: headless Chromium through playwright-core."""

    def __init__(self, node_modules: Path) -> None:
        super().__init__(HERE / "js" / "browser.mjs", node_modules)


@pytest.fixture
def browser(node_modules: Path) -> Iterator[Browser]:
    require_chromium()
    b = Browser(node_modules)
    yield b
    b.close()


def test_a_page_renders_the_events_it_missed_while_cut_off(
        cluster, proxy_factory, node_modules, browser, tmp_path):
    channel = "resume-browser"
    proxy = proxy_factory([cluster.node_ports[0]])
    site = page_site(node_modules, {"key": APP_KEY, "wsPort": proxy.port, "channel": channel})
    try:
        browser.ask("open", url=site.url)
        browser.look_until(lambda s: s["subscribed"] == 1, "the subscription")
        publisher = Publisher(cluster, [channel], rate=100)
        publisher.publish(10)
        browser.look_until(lambda s: len(s["items"]) == 10, "the first 10 events")

        proxy.cut()
        browser.look_until(lambda s: s["state"] != "connected", "the connection lost")
        publisher.publish(20)  # 10..29, while the page is cut off
        time.sleep(0.5)
        assert browser.ask("look")["items"] == list(range(10))
        proxy.allow()
        seen = browser.look_until(lambda s: s["subscribed"] == 2, "the resubscription")
        publisher.publish(10)  # 30..39, live
        seen = browser.look_until(lambda s: len(s["items"]) >= 40, "all 40 events")
        time.sleep(0.5)
        browser.ask("screenshot", path=str(tmp_path / "page.png"))
        seen = browser.ask("look")
    finally:
        site.close()
    assert seen["items"] == list(range(40))
    assert seen["connects"] == 2 and seen["failed"] is None
    print(f"\n{browser.version}: 40 events rendered in order, 20 of them missed while cut off")
