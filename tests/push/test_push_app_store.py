"""Beams apps managed with `clarion apps` (the Redis app store): the device, publish and
customer APIs, the Beams JWTs, the push worker and the push metrics follow an app added, a
secret rotated, credentials changed and an app disabled, without a restart. Driven by the
official Beams SDK over HTTPS, the real CLI and the real worker process."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from beams_harness import wait_for
from click.testing import CliRunner
from emulators.fcm import Fault as FcmFault
from pusher_push_notifications import (
    PusherAuthError,
    PusherError,
    PusherValidationError,
    PushNotifications,
)

from config.settings import settings_to_env
from gateway.cli import main
from gateway.state.devices import DeviceStore
from gateway.state.publishes import PublishStore

pytestmark = pytest.mark.usefixtures("worker_log")

FCM_BODY = {"notification": {"title": "stored", "body": "app"}}


def clarion_apps(settings: Any, *args: str) -> str:
    result = CliRunner().invoke(main, ["apps", *args], env=settings_to_env(settings),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def eventually(fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    """The API re-reads the store at most every second."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, PusherError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def refused(call: Callable[[], Any], error: type[Exception], match: str = "") -> None:
    try:
        call()
    except error as exc:
        assert match in str(exc), exc
        return
    raise AssertionError(f"not refused with {error.__name__} (yet)")


def push_credentials(fcm_emu: Any, apns_emu: Any, *, good_fcm: bool = True) -> str:
    return json.dumps({
        "fcm_service_account": fcm_emu.service_account(foreign_key=not good_fcm),
        "apns_key": apns_emu.key_pem, "apns_key_id": apns_emu.key_id,
        "apns_team_id": apns_emu.team_id, "apns_topic": apns_emu.topic,
    })


class StoredApp:
    """An app that exists only in the Redis app store, reached with the official SDK."""

    def __init__(self, settings: Any, api_server: Any, secret: str, push: str) -> None:
        self.settings = settings
        self.api = api_server
        self.id = "st" + uuid.uuid4().hex[:10]
        self.secret = secret
        clarion_apps(settings, "add", "--id", self.id, "--secret", secret, "--set",
                     f"push={push}")

    def sdk(self, secret: str | None = None) -> PushNotifications:
        client = PushNotifications(self.id, secret or self.secret, endpoint=self.api.endpoint)
        client.session.verify = self.api.ca_file
        return client

    def url(self, path: str) -> str:
        return f"{self.api.url}{path.format(id=self.id)}"

    def register(self, token: str, interest: str) -> str:
        base = self.url("/device_api/v1/instances/{id}/devices/fcm")
        resp = requests.post(base, json={"token": token}, verify=self.api.ca_file, timeout=5)
        assert resp.status_code == 200, resp.text
        device = resp.json()["id"]
        resp = requests.post(f"{base}/{device}/interests/{interest}", verify=self.api.ca_file,
                             timeout=5)
        assert resp.status_code == 200, resp.text
        return device

    def set_user(self, device: str, jwt_token: str) -> requests.Response:
        return requests.put(self.url(f"/device_api/v1/instances/{{id}}/devices/fcm/{device}/user"),
                            headers={"Authorization": f"Bearer {jwt_token}"},
                            verify=self.api.ca_file, timeout=5)

    def status(self, pid: str, secret: str | None = None) -> dict[str, Any]:
        resp = requests.get(self.url(f"/publish_api/v1/instances/{{id}}/publishes/{pid}"),
                            headers={"Authorization": f"Bearer {secret or self.secret}"},
                            verify=self.api.ca_file, timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_done(self, pid: str, secret: str | None = None) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status(pid, secret))["status"] == "done" and s, 25)


@pytest.fixture
def stored(push_settings, api_server, fcm_emu, apns_emu) -> StoredApp:
    return StoredApp(push_settings, api_server, "stored-secret-" + uuid.uuid4().hex,
                     push_credentials(fcm_emu, apns_emu))


def test_added_app_publishes_and_its_pushes_are_delivered(stored, fcm_emu):
    token, topic = "fcm-st-" + uuid.uuid4().hex, "t-" + uuid.uuid4().hex[:8]
    eventually(lambda: stored.register(token, topic))
    pid = eventually(lambda: stored.sdk().publish_to_interests([topic], {"fcm": FCM_BODY}))
    done = stored.wait_done(pid["publishId"])
    assert (done["devices"], done["delivered"], done["errors"]) == (1, 1, {})
    (msg,) = fcm_emu.messages(token)
    assert msg["notification"] == FCM_BODY["notification"]


def test_rotated_secret_applies_to_publishes_and_user_tokens(push_settings, stored):
    topic = "t-" + uuid.uuid4().hex[:8]
    device = eventually(lambda: stored.register("fcm-rot-" + uuid.uuid4().hex, topic))
    old = stored.sdk()
    old_jwt = old.generate_token("alice")["token"]
    eventually(lambda: old.publish_to_interests([topic], {"fcm": FCM_BODY}))

    new_secret = clarion_apps(push_settings, "rotate-secret", stored.id).strip()
    new = stored.sdk(new_secret)

    eventually(lambda: refused(lambda: old.publish_to_interests([topic], {"fcm": FCM_BODY}),
                               PusherAuthError))
    with pytest.raises(PusherAuthError):
        old.publish_to_users(["alice"], {"fcm": FCM_BODY})
    with pytest.raises(PusherAuthError):
        old.delete_user("alice")
    # A user token minted with the old secret no longer binds a device; one minted with the
    # new secret does.
    assert stored.set_user(device, old_jwt).status_code == 401
    assert stored.set_user(device, new.generate_token("alice")["token"]).status_code == 200
    pid = new.publish_to_users(["alice"], {"fcm": FCM_BODY})["publishId"]
    assert stored.wait_done(pid, new_secret)["delivered"] == 1
    new.delete_user("alice")


def test_disabled_app_is_refused_everywhere_then_enabled_again(push_settings, stored):
    topic = "t-" + uuid.uuid4().hex[:8]
    sdk = stored.sdk()
    eventually(lambda: stored.register("fcm-dis-" + uuid.uuid4().hex, topic))
    assert clarion_apps(push_settings, "disable", stored.id).strip() == f"app {stored.id} disabled"

    eventually(lambda: refused(lambda: sdk.publish_to_interests([topic], {"fcm": FCM_BODY}),
                               PusherValidationError, "disabled"))
    with pytest.raises(PusherValidationError, match="disabled"):
        sdk.publish_to_users(["bob"], {"fcm": FCM_BODY})
    with pytest.raises(PusherValidationError, match="disabled"):
        sdk.delete_user("bob")
    resp = requests.post(stored.url("/device_api/v1/instances/{id}/devices/fcm"),
                         json={"token": "fcm-x-" + uuid.uuid4().hex},
                         verify=stored.api.ca_file, timeout=5)
    assert resp.status_code == 403
    assert resp.json() == {"error": "Forbidden",
                           "description": f"The instance {stored.id} is disabled"}

    clarion_apps(push_settings, "enable", stored.id)
    pid = eventually(lambda: sdk.publish_to_interests([topic], {"fcm": FCM_BODY}))["publishId"]
    assert stored.wait_done(pid)["delivered"] == 1


def test_publish_accepted_before_disable_is_not_sent(push_settings, stored, r, fcm_emu):
    """The worker reads the app from the store too: a publish still queued when its app is
    disabled is closed with an error instead of being sent."""
    topic = "t-" + uuid.uuid4().hex[:8]
    token = "fcm-late-" + uuid.uuid4().hex
    store = DeviceStore(r, push_settings.redis.key_prefix)
    device_id, _ = store.register(stored.id, "fcm", token)
    store.set_interests(stored.id, device_id, [topic])
    fcm_emu.script(token, FcmFault(429, retry_after="4"))  # the next attempt in 4 s
    pid = eventually(lambda: stored.sdk().publish_to_interests([topic], {"fcm": FCM_BODY}))
    wait_for(lambda: stored.status(pid["publishId"])["pending"] == 1, 15)
    clarion_apps(push_settings, "disable", stored.id)
    done = wait_for(lambda: (s := _raw_status(r, push_settings, stored.id, pid["publishId"]))
                    and s["status"] == "done" and s, 25)
    assert done["errors"] == {"app": "the app is disabled"}
    assert done["delivered"] == 0


def _raw_status(r: Any, settings: Any, app_id: str, pid: str) -> dict[str, Any] | None:
    """The publish status as stored (the status API refuses a disabled app)."""
    return PublishStore(r, settings.redis.key_prefix, settings.push.status_ttl).status(app_id, pid)


def test_changed_credentials_reach_the_worker(push_settings, api_server, fcm_emu, apns_emu):
    app = StoredApp(push_settings, api_server, "cred-secret-" + uuid.uuid4().hex,
                    push_credentials(fcm_emu, apns_emu, good_fcm=False))
    topic, token = "t-" + uuid.uuid4().hex[:8], "fcm-cred-" + uuid.uuid4().hex
    eventually(lambda: app.register(token, topic))
    sdk = app.sdk()
    refused = app.wait_done(sdk.publish_to_interests([topic], {"fcm": FCM_BODY})["publishId"])
    assert "fcm" in refused["errors"] and refused["delivered"] == 0

    clarion_apps(push_settings, "set", app.id, f"push={push_credentials(fcm_emu, apns_emu)}")
    time.sleep(1.1)  # API and worker re-read the store at most every second
    done = app.wait_done(sdk.publish_to_interests([topic], {"fcm": FCM_BODY})["publishId"])
    assert (done["delivered"], done["errors"]) == (1, {})
    assert len(fcm_emu.messages(token)) == 1


def test_push_metrics_list_stored_apps(stored, beams_app):
    topic = "t-" + uuid.uuid4().hex[:8]
    eventually(lambda: stored.register("fcm-met-" + uuid.uuid4().hex, topic))
    pid = eventually(lambda: stored.sdk().publish_to_interests([topic], {"fcm": FCM_BODY}))
    stored.wait_done(pid["publishId"])
    text = beams_app.test_client().get("/metrics").get_data(as_text=True)
    assert f'clarion_push_publishes_total{{app_id="{stored.id}"}} 1.0' in text
    assert (f'clarion_push_notifications_total{{app_id="{stored.id}",outcome="delivered",'
            f'platform="fcm"}} 1.0') in text


@pytest.fixture
def config_app_api(push_settings, tmp_path) -> Any:
    """An API of its own whose app comes from the config file (no Beams key of its own: the
    app secret is the key), so `clarion apps` overlays a config app."""
    from beams_harness import TlsServer, build_app

    settings = push_settings.with_overrides(
        redis={"key_prefix": f"tcfg{uuid.uuid4().hex[:6]}:"},
        apps=[{"id": "cfg", "key": "cfg-key", "secret": "cfg-secret-" + "x" * 20}],
    )
    server = TlsServer(build_app(settings), tmp_path)
    yield settings, server
    server.stop()


def test_config_app_rotated_and_disabled_through_the_store(config_app_api):
    settings, server = config_app_api

    def sdk(secret: str) -> PushNotifications:
        client = PushNotifications("cfg", secret, endpoint=server.endpoint)
        client.session.verify = server.ca_file
        return client

    old = sdk(settings.apps[0].secret)
    old.publish_to_interests(["news"], {"fcm": FCM_BODY})
    new_secret = clarion_apps(settings, "rotate-secret", "cfg").strip()
    eventually(lambda: refused(lambda: old.publish_to_interests(["news"], {"fcm": FCM_BODY}),
                               PusherAuthError))
    new = sdk(new_secret)
    new.publish_to_interests(["news"], {"fcm": FCM_BODY})

    clarion_apps(settings, "disable", "cfg")
    eventually(lambda: refused(lambda: new.publish_to_interests(["news"], {"fcm": FCM_BODY}),
                               PusherValidationError, "disabled"))
