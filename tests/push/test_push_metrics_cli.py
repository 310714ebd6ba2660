"""Push outcome metrics (cumulative per-app counters the workers keep in Redis, exposed by the
API's ``/metrics`` at scrape time) and ``clarion push status``, after a real delivery by the
worker process through the emulators."""

from __future__ import annotations

import json
import uuid

import pytest
from beams_harness import APP_ID, SECRET, hex_token, wait_for
from click.testing import CliRunner
from emulators.fcm import Fault as FcmFault
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings, settings_to_env
from gateway.api.app import create_app
from gateway.cli import main
from gateway.embedded_redis import free_port
from gateway.state.devices import DeviceStore

pytestmark = pytest.mark.usefixtures("worker_log")

AUTH = {"Authorization": f"Bearer {SECRET}"}
PUB = f"/publish_api/v1/instances/{APP_ID}/publishes"


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        if family.name.startswith("clarion_push"):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def notifications(samples, platform: str, outcome: str) -> float:
    labels = (("app_id", APP_ID), ("outcome", outcome), ("platform", platform))
    return samples.get(("clarion_push_notifications_total", labels), 0.0)


def test_metrics_and_cli_status_after_delivery(client, r, push_settings, fcm_emu, apns_emu):
    store = DeviceStore(r, push_settings.redis.key_prefix)
    topic = "met-" + uuid.uuid4().hex[:10]
    good, dead, flaky = (f"fcm-met-{n}-{uuid.uuid4().hex}" for n in range(3))
    apns_good = hex_token()
    fcm_emu.unregistered.add(dead)
    fcm_emu.script(flaky, FcmFault(503))  # one 503, then delivered on the retry
    for platform, token in (("fcm", good), ("fcm", dead), ("fcm", flaky), ("apns", apns_good)):
        device_id, _ = store.register(APP_ID, platform, token)
        store.set_interests(APP_ID, device_id, [topic])

    before = scrape(client)
    body = {
        "interests": [topic],
        "fcm": {"notification": {"title": "m"}},
        "apns": {"aps": {"alert": "m"}},
    }
    resp = client.post(f"{PUB}/interests", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    pid = resp.get_json()["publishId"]

    def done():
        s = client.get(f"{PUB}/{pid}", headers=AUTH).get_json()
        return s["status"] == "done" and s

    status = wait_for(done, timeout=20)
    assert (status["devices"], status["delivered"], status["removed"], status["retried"]) == (
        4,
        3,
        1,
        1,
    )

    after = scrape(client)
    assert after[("clarion_push_stats_up", ())] == 1
    delta = {
        (p, o): notifications(after, p, o) - notifications(before, p, o)
        for p in ("fcm", "apns")
        for o in ("delivered", "failed", "retried", "removed")
    }
    assert delta == {
        ("fcm", "delivered"): 2,
        ("fcm", "failed"): 0,
        ("fcm", "retried"): 1,
        ("fcm", "removed"): 1,
        ("apns", "delivered"): 1,
        ("apns", "failed"): 0,
        ("apns", "retried"): 0,
        ("apns", "removed"): 0,
    }
    key = ("clarion_push_publishes_total", (("app_id", APP_ID),))
    assert after[key] - before.get(key, 0) == 1

    # `clarion push status` reads the same record (through the real `clarion` group).
    env = settings_to_env(push_settings)
    runner = CliRunner()
    shown = runner.invoke(main, ["push", "status", pid, "--app", APP_ID], env=env)
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split(None, 1) for line in shown.output.splitlines() if " " in line)
    assert lines["status"].strip() == "done" and lines["delivered"].strip() == "3"
    assert lines["removed"].strip() == "1" and lines["retried"].strip() == "1"
    as_json = runner.invoke(main, ["push", "status", pid, "--app", APP_ID, "--json"], env=env)
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == {**status, "pending": 0}

    missing = runner.invoke(main, ["push", "status", "pubid-nope", "--app", APP_ID], env=env)
    assert missing.exit_code == 1 and "no publish pubid-nope" in missing.output


def test_metrics_without_redis_still_answer(push_settings: Settings):
    dead_redis = push_settings.with_overrides(redis={"url": f"redis://127.0.0.1:{free_port()}"})
    app = create_app(dead_redis)  # registering the collector must not need Redis either
    samples = scrape(app.test_client())
    assert samples == {("clarion_push_stats_up", ()): 0}


def test_cli_status_needs_redis_url():
    result = CliRunner().invoke(
        main, ["push", "status", "pubid-x", "--app", APP_ID], env={"CLARION_SETTINGS_JSON": "{}"}
    )
    assert result.exit_code == 2 and "redis.url is not set" in result.output
