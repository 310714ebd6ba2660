"""End-to-end test harness: real Clarion processes (tests/_harness/cluster.py) and a Pusher
WebSocket client that speaks exactly like pusher-js (tests/_harness/client.py)."""

from _harness.client import PusherClient, RejectedConnection
from _harness.cluster import APP_ID, APP_KEY, APP_SECRET, Cluster, restart_redis

__all__ = [
    "APP_ID",
    "APP_KEY",
    "APP_SECRET",
    "Cluster",
    "PusherClient",
    "RejectedConnection",
    "restart_redis",
]
