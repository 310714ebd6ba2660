"""pysher (Pusher protocol 6, on websocket-client): connect, subscribe, receive.

pysher's particularities the server must tolerate: the URL carries ``protocol=6`` and
``client=Pysher``; pings are ``{"event":"pusher:ping","data":""}``; public subscriptions have
no ``auth`` key; it ``json.loads`` the connection_established data (so it must be a string) and
reads ``pusher:error`` data as an object.
"""

from __future__ import annotations

import json
import logging
import queue
import uuid

import pytest
from _harness import APP_KEY, APP_SECRET, Cluster

pysher = pytest.importorskip("pysher")

TIMEOUT = 10


class PysherSession:
    """A pysher client that subscribes the way pysher's README does: from the
    ``pusher:connection_established`` handler, on pysher's own thread. (Subscribing from another
    thread races pysher itself: it sends ``pusher:subscribe`` before it registers the channel,
    so an answer that comes back quickly enough is dropped by the client.)"""

    def __init__(
        self, cluster: Cluster, subscriptions: dict[str, tuple[str, ...]],
        user_data: dict | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.connected: queue.Queue[str] = queue.Queue()
        self.events: queue.Queue[tuple[str, str, object]] = queue.Queue()
        self.client = pysher.Pusher(
            APP_KEY,
            custom_host="127.0.0.1",
            port=cluster.node_ports[0],
            secure=False,
            secret=APP_SECRET,
            user_data=user_data,
            log_level=logging.WARNING,
            reconnect_interval=1,
        )
        self.client.connection.bind("pusher:connection_established", self._on_connect)
        self.client.connect()
        self.socket_id = json.loads(self.connected.get(timeout=TIMEOUT))["socket_id"]
        for channel in subscriptions:
            got = self.next()
            assert got[:2] == (channel, "pusher_internal:subscription_succeeded"), got

    def _on_connect(self, data: str) -> None:
        for channel, events in self.subscriptions.items():
            ch = self.client.subscribe(channel)
            for event in ("pusher_internal:subscription_succeeded", "pusher:subscription_error",
                          *events):
                ch.bind(event, lambda d, c=channel, e=event: self.events.put((c, e, d)))
        self.connected.put(data)

    def next(self) -> tuple[str, str, object]:
        return self.events.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect(timeout=2)


@pytest.fixture
def pysher_session(cluster: Cluster):
    sessions: list[PysherSession] = []

    def start(subscriptions: dict[str, tuple[str, ...]]) -> PysherSession:
        sessions.append(PysherSession(
            cluster, subscriptions, user_data={"user_id": "py-1", "user_info": {"lib": "pysher"}}
        ))
        return sessions[-1]

    yield start
    for s in sessions:
        s.close()


def test_pysher_connects_subscribes_and_receives(cluster, sdk, pysher_session):
    channel = f"pysher-{uuid.uuid4().hex[:8]}"
    session = pysher_session({channel: ("my-event",)})
    sdk.trigger(channel, "my-event", {"hello": "pysher"})
    assert session.next() == (channel, "my-event", json.dumps({"hello": "pysher"}))


def test_pysher_private_channel_signed_locally(cluster, sdk, pysher_session):
    channel = f"private-pysher-{uuid.uuid4().hex[:8]}"
    session = pysher_session({channel: ("private-event",)})
    sdk.trigger(channel, "private-event", "x")
    assert session.next() == (channel, "private-event", "x")


def test_pysher_presence_channel(cluster, sdk, pysher_session):
    channel = f"presence-pysher-{uuid.uuid4().hex[:8]}"
    pysher_session({channel: ()})
    assert {"id": "py-1"} in sdk.users_info(channel)["users"]


def test_pysher_ping_with_empty_string_data_gets_a_pong(cluster, pysher_session):
    session = pysher_session({})
    pongs: queue.Queue[object] = queue.Queue()
    session.client.connection.bind("pusher:pong", lambda data: pongs.put(data))
    session.client.connection.send_ping()  # {"event": "pusher:ping", "data": ""}
    pongs.get(timeout=TIMEOUT)
    assert session.client.connection.state == "connected"
