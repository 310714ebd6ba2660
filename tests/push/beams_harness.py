"""Beams push test harness (fixtures re-exported by conftest.py): FCM and APNs emulators,
a Celery worker process on the ``push`` queue, and the Beams API served over TLS (the
official SDK only speaks HTTPS).

One worker and one API server serve the whole module set (their settings, with the emulators'
addresses, are fixed when they start); tests keep apart by using their own tokens, interests
and users. Apps:

- ``beams1``: good FCM, APNs and VAPID credentials;
- ``badcreds``: an FCM service account, an APNs key and a VAPID key the emulators do not know
  (web subscriptions are made with ``beams1``'s key).
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from _harness.worker import CeleryWorker
from emulators.apns import ApnsEmulator, make_p8
from emulators.fcm import FcmEmulator
from emulators.webpush import WebPushEmulator
from flask import Flask
from werkzeug.serving import make_server

from config.settings import Settings
from gateway.vapid import generate as generate_vapid

APP_ID, SECRET = "beams1", "beams-secret-key-0123456789abcdef-0123456789"
BAD_APP = "badcreds"
VAPID_PRIVATE, VAPID_PUBLIC = generate_vapid()


@pytest.fixture(scope="session", autouse=True)
def _no_proxy() -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = "*"


@pytest.fixture(scope="session")
def fcm_emu() -> Iterator[FcmEmulator]:
    emu = FcmEmulator().start()
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def web_emu() -> Iterator[WebPushEmulator]:
    emu = WebPushEmulator().start()
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def apns_emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsEmulator]:
    emu = ApnsEmulator(tmp_path_factory.mktemp("apns")).start()
    yield emu
    emu.stop()


def make_settings(
    redis_url: str, prefix: str, fcm: FcmEmulator, apns: ApnsEmulator, **push: Any
) -> Settings:
    good = {
        "fcm_service_account": fcm.service_account(),
        "apns_key": apns.key_pem,
        "apns_key_id": apns.key_id,
        "apns_team_id": apns.team_id,
        "apns_topic": apns.topic,
        "beams_secret_key": SECRET,
        "web_vapid_private_key": VAPID_PRIVATE,
        "web_vapid_subject": "mailto:push@example.com",
    }
    bad = {
        **good,
        "fcm_service_account": fcm.service_account(foreign_key=True),
        "apns_key": make_p8()[0],
        "web_vapid_private_key": generate_vapid()[0],  # not the key browsers subscribed with
    }
    return Settings(
        redis={"url": redis_url, "key_prefix": prefix},
        apps=[
            {"id": APP_ID, "key": "k1", "secret": "app-secret-1", "push": good},
            {"id": BAD_APP, "key": "k2", "secret": "app-secret-2", "push": bad},
        ],
        worker={"concurrency": 2, "visibility_timeout": 300, "restore_interval": 1},
        push={
            "fcm_base_url": fcm.base_url,
            "apns_host": "localhost",
            "apns_port": apns.port,
            "apns_ca_file": apns.ca_file,
            "send_timeout": 1.0,
            "max_attempts": 4,
            "retry_base_delay": 0.2,
            "retry_max_delay": 1.0,
            "task_time_budget": 5.0,
            "page_size": 50,
            **push,
        },
    )


@pytest.fixture(scope="session")
def push_settings(redis_server: Any, fcm_emu: FcmEmulator, apns_emu: ApnsEmulator) -> Settings:
    return make_settings(redis_server.url, f"tpush{uuid.uuid4().hex[:6]}:", fcm_emu, apns_emu)


@pytest.fixture
def r(push_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(push_settings.redis.url, decode_responses=True)
    yield client
    client.close()


# --------------------------------------------------------------------------- worker

class PushWorker(CeleryWorker):
    """A real Celery worker process (``workers.main.run_worker``) consuming ``push``."""

    term_group = True
    stop_timeout = 10.0

    def __init__(self, settings: Settings, log_path: Path, concurrency: int = 2,
                 pool: str = "prefork") -> None:
        super().__init__(settings, log_path, ("push",), concurrency, pool)


@pytest.fixture(scope="session")
def push_worker(
    push_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushWorker]:
    worker = PushWorker(push_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def worker_log(push_worker: PushWorker, request: pytest.FixtureRequest) -> Iterator[PushWorker]:
    yield push_worker
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print("---- worker log (tail) ----\n" + push_worker.log()[-6000:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# --------------------------------------------------------------------------- the API


def build_app(settings: Settings) -> Flask:
    """The real ``create_app`` with the Beams blueprint, or a bare Flask app if it is not there."""
    from gateway.api import beams

    try:
        from gateway.api.app import create_app

        app = create_app(settings)
    except ImportError:
        app = Flask("clarion.beams.test")
    if "clarion_beams" not in app.extensions:
        beams.register(app, settings)
    return app


class TlsServer:
    def __init__(self, app: Flask, tmp: Path) -> None:
        ca = trustme.CA()
        self.ca_file = str(tmp / "api-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
        self.server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ctx)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def beams_app(push_settings: Settings) -> Flask:
    return build_app(push_settings)


@pytest.fixture(scope="session")
def api_server(beams_app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(beams_app, tmp_path_factory.mktemp("api"))
    yield server
    server.stop()


@pytest.fixture
def client(beams_app: Flask) -> Any:
    return beams_app.test_client()


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def hex_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex
