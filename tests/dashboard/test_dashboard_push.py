"""The push page and the console's push entries: a Beams publish delivered by a real push
worker to the FCM emulator (the only thing faked) shows with its status and counts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.dashboard.conftest import TOKEN, signed_in
from tests.emulators.fcm import FcmEmulator

pytestmark = pytest.mark.slow

BEAMS_SECRET = "beams-secret-for-the-dashboard"


@pytest.fixture
def fcm() -> Iterator[FcmEmulator]:
    emu = FcmEmulator().start()
    yield emu
    emu.stop()


def _wait(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return got


def test_a_publish_shows_on_the_push_page_and_in_the_console(
        cluster_factory: Any, fcm: FcmEmulator) -> None:
    cluster = cluster_factory(
        app={"push": {"fcm_service_account": fcm.service_account(),
                      "beams_secret_key": BEAMS_SECRET}},
        push={"fcm_base_url": fcm.base_url}, dashboard={"admin_token": TOKEN})
    s, _ = signed_in(cluster)
    dash = f"{cluster.api_url}/dashboard/api/apps/1"
    s.get(f"{dash}/log", timeout=10)  # watch the app
    time.sleep(1.5)

    device_api = f"{cluster.api_url}/device_api/v1/instances/1/devices/fcm"
    token = uuid.uuid4().hex * 2
    device = requests.post(device_api, json={"token": token, "metadata": {}}, timeout=10).json()
    r = requests.put(f"{device_api}/{device['id']}/interests", json={"interests": ["news"]},
                     timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(f"{cluster.api_url}/publish_api/v1/instances/1/publishes/interests",
                      json={"interests": ["news"], "fcm": {"notification": {"title": "hi"}}},
                      headers={"Authorization": f"Bearer {BEAMS_SECRET}"}, timeout=10)
    assert r.status_code == 200, r.text
    publish_id = r.json()["publishId"]

    def done() -> dict[str, Any] | None:
        page = s.get(f"{dash}/push", timeout=10).json()
        first = page["publishes"][0] if page["publishes"] else None
        return page if first and first["status"] == "done" else None

    page = _wait(done, "the publish done")
    (shown,) = page["publishes"]
    assert shown["publishId"] == publish_id
    assert (shown["devices"], shown["delivered"], shown["failed"]) == (1, 1, 0)
    assert shown["platforms"] == {"fcm": {"delivered": 1}}
    assert page["totals"]["publishes"] == 1 and page["totals"]["fcm:delivered"] == 1
    assert fcm.messages(token)

    def logged() -> list[dict[str, Any]]:
        entries = s.get(f"{dash}/log", timeout=10).json()["entries"]
        return [e for e in entries if e["kind"] == "push_publish"]

    entries = _wait(lambda: (e := logged()) and e[0]["status"] == "done" and e, "push entries")
    assert entries[0]["publishId"] == publish_id and entries[0]["delivered"] == 1
    assert entries[0]["source"] == "worker"
