"""Terminate connections, errors as JSON, health, metrics, Redis down, gunicorn server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from config.settings import Settings, settings_to_env
from gateway.api.app import create_app
from gateway.embedded_redis import free_port
from tests.api.api_harness import APP, signed

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- terminate


def test_terminate_sdk_path(sdk, bus):
    # pusher-http-python posts to /users/{id}/terminate_connections (no /apps/{id}).
    assert sdk.terminate_user_connections("user-7") == {}
    assert bus.next() == {"t": "terminate", "a": "1", "u": "user-7"}


def test_terminate_apps_path(client, bus):
    r = signed(client, "POST", "/apps/1/users/u1/terminate_connections", APP, {})
    assert r.status_code == 200 and r.get_json() == {}
    assert bus.next() == {"t": "terminate", "a": "1", "u": "u1"}


def test_terminate_unknown_key_401(client):
    other = {"key": "nobody", "secret": "x"}
    r = signed(client, "POST", "/users/u1/terminate_connections", other, {})
    assert r.status_code == 401


def test_terminate_signature_checked(client, bus):
    r = signed(client, "POST", "/users/u1/terminate_connections", APP, {}, secret="bad")
    assert r.status_code == 401
    r = signed(client, "POST", "/apps/1/users/u1/terminate_connections", APP, {}, secret="bad")
    assert r.status_code == 401


# --------------------------------------------------------------------------- errors


def test_unknown_route_404_json(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.get_json() == {"error": "Not found", "code": 404}


def test_wrong_method_405_json(client):
    r = client.get("/apps/1/events")
    assert r.status_code == 405 and r.get_json()["code"] == 405
    assert "POST" in r.headers["Allow"]


def test_body_too_large_413_json(client, settings):
    raw = b'{"name":"e","channels":["c"],"data":"' + b"x" * settings.api.max_body_bytes + b'"}'
    r = signed(client, "POST", "/apps/1/events", APP, raw=raw)
    assert r.status_code == 413 and r.get_json()["code"] == 413


def test_redis_down_503(redis_url, key_prefix):
    dead = Settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0", "key_prefix": key_prefix},
                    apps=[APP])
    app = create_app(dead)
    client = app.test_client()
    body = {"name": "e", "channels": ["c"], "data": "d"}
    r = signed(client, "POST", "/apps/1/events", APP, body)
    assert r.status_code == 503 and r.get_json()["code"] == 503
    assert r.headers["Retry-After"] == "1"
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200
    app.extensions["clarion"].close()


def test_unexpected_error_500_json(flask_app, client, caplog):
    @flask_app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    r = client.get("/boom")
    assert r.status_code == 500
    assert r.get_json() == {"error": "A server error has occurred.", "code": 500}
    assert "kaboom" in caplog.text


# --------------------------------------------------------------------------- health, metrics


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_metrics(client, settings):
    signed(client, "POST", "/apps/1/events", APP, {"name": "e", "channels": ["a", "b"],
                                                   "data": "d"})
    signed(client, "POST", "/apps/1/events", APP, {"name": "e"})
    # No worker runs here: the first request's task waits, so the next one rides on it.
    signed(client, "POST", "/apps/1/events", APP, {"name": "e", "channel": "c", "data": "d"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'clarion_api_events_accepted_total{app_id="1"} 3.0' in text
    assert 'clarion_api_tasks_enqueued_total{task="clarion.live.deliver"} 1.0' in text
    assert ('clarion_api_requests_total{endpoint="/apps/<app_id>/events",method="POST",'
            'status="400"} 1.0') in text
    # Registries are per app: a second app starts from zero.
    fresh = create_app(settings)
    assert "clarion_api_events_accepted_total{" not in fresh.test_client().get(
        "/metrics").get_data(as_text=True)
    fresh.extensions["clarion"].close()


# --------------------------------------------------------------------------- HTTP servers


@pytest.mark.parametrize(("server", "buffer_bodies"),
                         [("granian", True), ("granian", False), ("gunicorn", True)])
def test_run_api_serves_and_stops_on_sigterm(settings, redis_client, key_prefix, server,
                                             buffer_bodies):
    port = free_port()
    served = settings.with_overrides(api={
        "port": port, "workers": 1, "threads": 2, "server": server,
        "buffer_bodies": buffer_bodies})
    code = "from config import load_settings; from gateway.api.server import run_api; " \
           "run_api(load_settings())"
    env = {**os.environ, **settings_to_env(served)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # still starting
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, f"{server} did not start"
                time.sleep(0.1)
        assert r.status_code == 200
        import pusher

        sdk = pusher.Pusher(app_id="1", key=APP["key"], secret=APP["secret"],
                            host="127.0.0.1", port=port, ssl=False)
        assert sdk.trigger("c", "e", "d") == {}
        assert redis_client.llen(f"{key_prefix}live") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
