"""Web Push end to end: a web device registered as the Beams web SDK does (base64 of the
browser's PushSubscription), a publish by the official server SDK, a real worker process with
pywebpush, and a push service emulator that checks the VAPID token and decrypts the aes128gcm
body: the bytes a browser's service worker would get."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from beams_harness import APP_ID, BAD_APP, VAPID_PUBLIC
from emulators.webpush import Fault
from test_push_delivery import publish, sdk, wait_done  # noqa: F401

pytestmark = pytest.mark.usefixtures("worker_log")

DEV = f"/device_api/v1/instances/{APP_ID}"
WEB = {"notification": {"title": "Hello", "body": "from Clarion", "deep_link": "https://x.test/a"},
       "data": {"order": 42}, "time_to_live": 3600}


def web_device(client, web_emu, interest: str, app: str = APP_ID) -> tuple[str, str]:
    """Subscribe as the web SDK does (the public key from the API), register, add interest."""
    dev = f"/device_api/v1/instances/{app}"
    key = client.get(f"{dev}/web-vapid-public-key").get_json()["vapidPublicKey"]
    sub = web_emu.subscribe(key if app == APP_ID else VAPID_PUBLIC)
    resp = client.post(f"{dev}/devices/web",
                       json={"token": web_emu.token(sub), "metadata": {"sdkVersion": "2.1.0"}})
    assert resp.status_code == 200, resp.get_json()
    device_id = resp.get_json()["id"]
    assert client.post(f"{dev}/devices/web/{device_id}/interests/{interest}").status_code == 200
    return device_id, web_emu.sub_id(sub)


def topic() -> str:
    return "web-" + uuid.uuid4().hex[:10]


def test_the_vapid_public_key_is_the_apps(client):
    assert client.get(f"{DEV}/web-vapid-public-key").get_json() == {"vapidPublicKey": VAPID_PUBLIC}


def test_a_publish_reaches_the_browser_decrypted(client, sdk, api_server, web_emu):  # noqa: F811
    interest = topic()
    device_id, sub_id = web_device(client, web_emu, interest)
    assert device_id.startswith("web-")
    pid = sdk.publish_to_interests([interest], {"web": WEB})["publishId"]
    done = wait_done(api_server, pid)
    assert (done["delivered"], done["failed"], done["retried"]) == (1, 0, 0), done
    [got] = web_emu.messages(sub_id)
    assert got["ttl"] == 3600
    assert got["payload"] == {
        "notification": WEB["notification"],
        "data": {"order": 42, "pusher": {"instanceId": APP_ID, "publishId": pid,
                                         "hasDisplayableContent": True, "hasData": True}},
    }


def test_a_gone_subscription_removes_the_device(client, api_server, web_emu):
    interest = topic()
    device_id, sub_id = web_device(client, web_emu, interest)
    web_emu.gone.add(sub_id)
    done = wait_done(api_server, publish(api_server, {"interests": [interest], "web": WEB}))
    assert (done["removed"], done["delivered"]) == (1, 0), done
    assert client.get(f"{DEV}/devices/web/{device_id}").status_code == 404


def test_throttling_and_server_errors_are_retried(client, api_server, web_emu):
    interest = topic()
    _, sub_id = web_device(client, web_emu, interest)
    web_emu.script(sub_id, Fault(429, retry_after="1"), Fault(503))
    done = wait_done(api_server, publish(api_server, {"interests": [interest], "web": WEB}))
    assert (done["delivered"], done["retried"], done["failed"]) == (1, 2, 0), done
    assert len(web_emu.messages(sub_id)) == 1


def test_a_vapid_key_the_subscription_was_not_made_with_is_refused(client, api_server,
                                                                   web_emu):
    interest = topic()
    _, sub_id = web_device(client, web_emu, interest, app=BAD_APP)
    refused = len(web_emu.refused)
    done = wait_done(api_server, publish(api_server, {"interests": [interest], "web": WEB},
                                         app=BAD_APP), app=BAD_APP)
    assert (done["delivered"], done["failed"]) == (0, 1) and "web" in done["errors"], done
    assert web_emu.messages(sub_id) == []
    assert "k is not the key" in web_emu.refused[refused]


@pytest.mark.parametrize("token", [
    "not base64 at all!",
    base64.b64encode(b"[1, 2]").decode(),
    base64.b64encode(json.dumps({"endpoint": "https://push.test/x"}).encode()).decode(),
    base64.b64encode(json.dumps({"endpoint": "ftp://x", "keys": {"p256dh": "a", "auth": "b"}})
                     .encode()).decode(),
])
def test_a_token_that_is_not_a_push_subscription_is_refused(client, token):
    resp = client.post(f"{DEV}/devices/web", json={"token": token, "metadata": {}})
    assert resp.status_code == 400 and resp.get_json()["error"] == "InvalidToken", resp.get_json()


@pytest.mark.parametrize("web", [{"time_to_live": -1}, {"time_to_live": 2419201},
                                 {"time_to_live": "1h"}, {"data": {"pusher": 1}}])
def test_bad_web_sections_are_refused(api_server, web):
    import requests
    from beams_harness import SECRET

    url = f"{api_server.url}/publish_api/v1/instances/{APP_ID}/publishes/interests"
    resp = requests.post(url, json={"interests": ["x"], "web": web}, timeout=5,
                         headers={"Authorization": f"Bearer {SECRET}"},
                         verify=api_server.ca_file)
    assert resp.status_code == 422 and resp.json()["description"], resp.text


def test_cli_vapid_keys_make_a_pair_the_api_serves(tmp_path, push_settings):
    import re

    from beams_harness import build_app
    from click.testing import CliRunner

    from config import load_settings
    from gateway.cli import main

    result = CliRunner().invoke(main, ["push", "vapid-keys", "--app", "7"])
    assert result.exit_code == 0, result.output
    public = re.search(r"public key (\S+)", result.output).group(1)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[redis]\nurl = "{push_settings.redis.url}"\n'
        '[[apps]]\nid = "7"\nkey = "k7"\nsecret = "s7"\n' + result.output
    )
    app = build_app(load_settings(config, environ={}))
    got = app.test_client().get("/device_api/v1/instances/7/web-vapid-public-key")
    assert got.status_code == 200 and got.get_json() == {"vapidPublicKey": public}
    bare = CliRunner().invoke(main, ["push", "vapid-keys"])
    assert bare.exit_code == 0 and "private key: " in bare.output


def test_no_vapid_key_is_a_404_with_a_description(tmp_path, push_settings):
    from beams_harness import build_app

    settings = push_settings.with_overrides(apps=[{"id": "8", "key": "k8", "secret": "s8"}])
    got = build_app(settings).test_client().get("/device_api/v1/instances/8/web-vapid-public-key")
    assert got.status_code == 404 and "not configured" in got.get_json()["description"]
