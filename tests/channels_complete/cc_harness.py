"""Helpers of the channels_complete suite (issue 3). conftest.py starts one deployment shared
by the suite (two WebSocket nodes, one worker, the API: real processes), with one app per
feature so that their settings do not interfere. Helpers to reach each app with the official
``pusher`` SDK and a pusher-js-shaped WebSocket client (tests/_harness/client.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pusher
from _harness import Cluster, PusherClient
from _harness.cluster import ENCRYPTION_MASTER_KEY_B64

CACHE_TTL = 4

# id -> extra settings; key "key-{id}", secret "secret-{id}".
APPS: dict[str, dict[str, Any]] = {
    "1": {"subscription_count": True},  # cache, users, watchlists, counts
    "2": {"max_connections": 3},
    "3": {"user_authentication_timeout": 1.0},
    "4": {"allowed_origins": ["https://good.example", "*.trusted.example"]},
    "5": {"max_api_requests_per_second": 5},
    "6": {"max_client_events_per_second": 3, "max_presence_members": 2,
          "max_user_info_bytes": 64, "max_event_bytes": 100},
    "7": {},  # changed at runtime by `clarion apps` (test_cc_apps.py)
}


def app_key(app_id: str) -> str:
    return f"key-{app_id}"


def app_secret(app_id: str) -> str:
    return f"secret-{app_id}"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Deployment:
    """The shared cluster, with per-app SDK and client factories."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def sdk(self, app_id: str = "1", secret: str | None = None) -> pusher.Pusher:
        return pusher.Pusher(
            app_id=app_id, key=app_key(app_id), secret=secret or app_secret(app_id),
            host="127.0.0.1", port=self.cluster.api_port, ssl=False, timeout=10,
            encryption_master_key_base64=ENCRYPTION_MASTER_KEY_B64,
        )

    def url(self, node: int = 0, app_id: str = "1", key: str | None = None) -> str:
        return self.cluster.ws_url(node, key=key or app_key(app_id))

    def client(self, node: int = 0, app_id: str = "1", secret: str | None = None,
               key: str | None = None) -> PusherClient:
        return PusherClient.connect(self.url(node, app_id, key),
                                    auth=self.sdk(app_id, secret))


def signin(client: PusherClient, sdk: pusher.Pusher, user_data: dict[str, Any]) -> dict:
    """pusher.signin() as pusher-js does it, with the auth from the SDK's authenticate_user."""
    signed = sdk.authenticate_user(client.socket_id, user_data)
    client.send_event("pusher:signin", {"auth": signed["auth"],
                                         "user_data": signed["user_data"]})
    return signed


