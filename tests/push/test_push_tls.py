"""The API served over HTTPS by the real gunicorn runner (``gateway.api.server.run_api`` in a
subprocess, ``api.tls_cert_file``/``api.tls_key_file`` from a trustme test CA), and the official
Beams SDK publishing through it to a real worker and the FCM emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from _harness.worker import ProcessRunner
from beams_harness import APP_ID, SECRET, wait_for
from pusher_push_notifications import PushNotifications

from config.settings import ConfigError, Settings, load_settings
from gateway.embedded_redis import free_port
from gateway.state.devices import DeviceStore

pytestmark = pytest.mark.usefixtures("worker_log")

_RUN_API = "from config import load_settings; from gateway.api.server import run_api; " \
    "run_api(load_settings())"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = (str(tmp / "ca.pem"), str(tmp / "cert.pem"), str(tmp / "key.pem"))
    ca.cert_pem.write_to_path(paths[0])
    cert.private_key_and_cert_chain_pem.write_to_path(paths[1])  # chain + key is fine too
    cert.private_key_pem.write_to_path(paths[2])
    return paths


class HttpsApi(ProcessRunner):
    term_group = True

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        super().__init__(settings, log_path, _RUN_API)


@pytest.fixture(scope="module")
def https_api(push_settings, tls_files, tmp_path_factory) -> Iterator[tuple[HttpsApi, str]]:
    ca, cert, key = tls_files
    port = free_port()
    settings = push_settings.with_overrides(
        api={
            "host": "127.0.0.1",
            "port": port,
            "workers": 1,
            "threads": 4,
            "tls_cert_file": cert,
            "tls_key_file": key,
        }
    )
    api = HttpsApi(settings, tmp_path_factory.mktemp("api") / "api.log")
    url = f"https://localhost:{port}"

    def ready() -> bool:
        if api.proc.poll() is not None:
            raise AssertionError("the API exited:\n" + api.log_path.read_text())
        try:
            return requests.get(f"{url}/ready", verify=ca, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(ready, timeout=20, interval=0.1)
        yield api, url
    finally:
        api.stop()


def test_official_sdk_publishes_over_https(https_api, tls_files, push_settings, r, fcm_emu):
    api, url = https_api
    ca = tls_files[0]
    topic = "tls-" + uuid.uuid4().hex[:10]
    token = "fcm-tls-" + uuid.uuid4().hex
    store = DeviceStore(r, push_settings.redis.key_prefix)
    device_id, _ = store.register(APP_ID, "fcm", token)
    store.set_interests(APP_ID, device_id, [topic])

    sdk = PushNotifications(APP_ID, SECRET, endpoint=f"localhost:{api.settings.api.port}")
    sdk.session.verify = ca  # the SDK uses session.send: REQUESTS_CA_BUNDLE is not read
    pid = sdk.publish_to_interests([topic], {"fcm": {"notification": {"title": "over tls"}}})[
        "publishId"
    ]

    def done():
        s = requests.get(
            f"{url}/publish_api/v1/instances/{APP_ID}/publishes/{pid}",
            headers={"Authorization": f"Bearer {SECRET}"},
            verify=ca,
            timeout=5,
        ).json()
        return s["status"] == "done" and s

    status = wait_for(done, timeout=20)
    assert (status["devices"], status["delivered"]) == (1, 1)
    (msg,) = fcm_emu.messages(token)
    assert msg["notification"]["title"] == "over tls"

    # Only HTTPS is served on the port, and only to clients that trust the CA.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/health", timeout=5)  # system CAs only
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{api.settings.api.port}/health", timeout=5)


def test_tls_settings_need_both_files_and_existing_ones(tls_files, tmp_path):
    _, cert, key = tls_files
    ok = load_settings(
        environ={"CLARION_API__TLS_CERT_FILE": cert, "CLARION_API__TLS_KEY_FILE": key}
    )
    assert ok.api.tls and ok.api.tls_cert_file == cert
    assert not load_settings(environ={}).api.tls

    with pytest.raises(ConfigError, match=r"api: tls_cert_file is set but tls_key_file is not"):
        load_settings(environ={"CLARION_API__TLS_CERT_FILE": cert})
    with pytest.raises(ConfigError, match=r"api: tls_key_file is set but tls_cert_file is not"):
        load_settings(environ={"CLARION_API__TLS_KEY_FILE": key})
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"api\.tls_key_file: no such file"):
        load_settings(
            environ={"CLARION_API__TLS_CERT_FILE": cert, "CLARION_API__TLS_KEY_FILE": missing}
        )

    from gateway.api.server import gunicorn_options

    opts = gunicorn_options(ok)
    assert (opts["certfile"], opts["keyfile"]) == (cert, key)
    assert "certfile" not in gunicorn_options(load_settings(environ={}))
