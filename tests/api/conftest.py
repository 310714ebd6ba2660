"""Fixtures for the REST API tests: a real Redis (tests/conftest.py), the Flask app, a real
HTTP server for the official ``pusher`` SDK, a bus reader and node-side state; and whole
``clarion api`` processes (``cluster_factory``), whose logs a failing test's report shows."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pusher
import pytest
import redis
from _harness.fixtures import cluster_factory, pytest_runtest_makereport  # noqa: F401
from werkzeug.serving import make_server

from config.settings import AppSettings, Settings
from gateway.api.app import create_app
from gateway.state.keys import Keys
from tests.api.api_harness import APP, DISABLED, SMALL, BusReader, NodeState


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis={"url": redis_url, "key_prefix": key_prefix},
        apps=[APP, DISABLED, SMALL],
        api={"max_body_bytes": 64 * 1024},
    )


@pytest.fixture
def app_settings(settings: Settings) -> AppSettings:
    return settings.apps[0]


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis.key_prefix)


@pytest.fixture
def flask_app(settings: Settings):
    app = create_app(settings)
    yield app
    app.extensions["clarion"].close()


@pytest.fixture
def client(flask_app):
    return flask_app.test_client()


@pytest.fixture
def server(flask_app) -> Iterator[int]:
    """The app on a real HTTP server (werkzeug, threaded) on a free port."""
    srv = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield srv.server_port
    srv.shutdown()
    thread.join(5)


@pytest.fixture
def sdk(server: int) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP["id"], key=APP["key"], secret=APP["secret"],
        host="127.0.0.1", port=server, ssl=False,
    )


@pytest.fixture
def bus(redis_client: redis.Redis, keys: Keys) -> Iterator[BusReader]:
    reader = BusReader(redis_client, keys.bus)
    yield reader
    reader.close()


@pytest.fixture
def node(redis_url: str, keys: Keys) -> NodeState:
    state = NodeState(redis_url, keys)
    state.heartbeat()
    return state
