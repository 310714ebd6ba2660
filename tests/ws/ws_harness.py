"""Helpers for the WebSocket node tests: a node in a thread, a Pusher client, the bus side.

The client speaks exactly what pusher-js sends (``{"event":"pusher:subscribe","data":{"auth":
"","channel":...}}``, pings with ``"data":{}``) over the ``websockets`` library. Tests wait for
messages instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis
import uvloop
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from config.settings import Settings
from gateway.embedded_redis import free_port
from gateway.protocol.signatures import auth_token, channel_string, user_string
from gateway.state.bus import BusEvent
from gateway.state.history import History
from gateway.state.keys import Keys
from gateway.ws.node import Node, create_node

KEY, SECRET, APP_ID = "app-key", "app-secret", "1"
PUSHER_JS_QUERY = "protocol=7&client=js&version=8.4.0&flash=false"


def make_settings(redis_url: str, key_prefix: str, **ws: Any) -> Settings:
    """Settings for a test node; ``ws`` overrides websocket.*, except ``apps`` and ``history``."""
    history = ws.pop("history", {})
    apps = ws.pop("apps", None) or [
        {"id": APP_ID, "key": KEY, "secret": SECRET},
        {"id": "2", "key": "disabled-key", "secret": "s2", "enabled": False},
        {"id": "3", "key": "quiet-key", "secret": "s3", "client_events": False},
    ]
    return Settings.model_validate({
        "redis": {"url": redis_url, "key_prefix": key_prefix},
        "websocket": {"port": free_port(), "heartbeat_interval": 0.2, **ws},
        "apps": apps,
        "history": history,
        "log_level": "warning",
    })


class NodeThread:
    """A node on its own uvloop in a daemon thread, as `clarion ws` runs it (minus signals)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node: Node | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NodeThread:
        self.thread.start()
        assert self._started.wait(15), "node did not start"
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.node = create_node(self.settings)
            await self.node.start()
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.node.stop()

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 10) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.websocket.port}"


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class PusherClient:
    def __init__(self, base_url: str, key: str = KEY, query: str = PUSHER_JS_QUERY,
                 path: str | None = None) -> None:
        self.ws: ClientConnection = connect(
            f"{base_url}{path or '/app/' + key}?{query}",
            open_timeout=5, max_size=None, legacy=True,
        )
        self.socket_id: str | None = None

    # ---------------------------------------------------------------- receiving

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        try:
            raw = self.ws.recv(timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
        return json.loads(raw)

    def established(self) -> dict[str, Any]:
        msg = self.recv()
        assert msg["event"] == "pusher:connection_established", msg
        data = json.loads(msg["data"])
        self.socket_id = data["socket_id"]
        return data

    def expect(self, event: str, channel: str | None = None, timeout: float = 5) -> dict[str, Any]:
        """The next message, which must be ``event`` (on ``channel``)."""
        msg = self.recv(timeout)
        assert msg["event"] == event, msg
        if channel is not None:
            assert msg.get("channel") == channel, msg
        return msg

    def wait_for(
        self, event: str, channel: str | None = None, timeout: float = 5
    ) -> dict[str, Any]:
        """Skip messages until ``event`` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg["event"] == event and (channel is None or msg.get("channel") == channel):
                return msg

    def closed(self, timeout: float = 5) -> Closed:
        """Read until the server closes; the close code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv(max(0.01, deadline - time.monotonic()))
        except Closed as exc:
            return exc

    # ---------------------------------------------------------------- sending (as pusher-js)

    def send(self, event: str, data: Any, channel: str | None = None) -> None:
        msg: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            msg["channel"] = channel
        self.ws.send(json.dumps(msg))

    def subscribe(self, channel: str, auth: str = "", channel_data: str | None = None,
                  clarion: dict[str, Any] | None = None) -> None:
        """``clarion``: the resume request of docs/resume.md (``{"v": 1, "serial": ...}``)."""
        data: dict[str, Any] = {"auth": auth, "channel": channel}
        if channel_data is not None:
            data["channel_data"] = channel_data
        if clarion is not None:
            data["clarion"] = clarion
        self.send("pusher:subscribe", data)

    def subscribed(self, channel: str, **kw: Any) -> dict[str, Any]:
        self.subscribe(channel, **kw)
        return self.expect("pusher_internal:subscription_succeeded", channel)

    def subscribe_private(self, channel: str) -> dict[str, Any]:
        assert self.socket_id
        return self.subscribed(channel, auth=auth_token(KEY, SECRET,
                                                        channel_string(self.socket_id, channel)))

    def subscribe_presence(self, channel: str, user_id: Any, info: Any = None) -> dict[str, Any]:
        """subscription_succeeded's data, parsed."""
        assert self.socket_id
        payload = {"user_id": user_id} if info is None else {"user_id": user_id, "user_info": info}
        channel_data = json.dumps(payload)
        auth = auth_token(KEY, SECRET, channel_string(self.socket_id, channel, channel_data))
        msg = self.subscribed(channel, auth=auth, channel_data=channel_data)
        return json.loads(msg["data"])

    def signin(self, user_data: str) -> None:
        assert self.socket_id
        auth = auth_token(KEY, SECRET, user_string(self.socket_id, user_data))
        self.send("pusher:signin", {"auth": auth, "user_data": user_data})

    def close(self) -> None:
        self.ws.close()


class Bus:
    """The API and workers' side, with redis-py: accept into history, publish on the bus."""

    def __init__(self, client: redis.Redis, key_prefix: str, max_events: int = 100) -> None:
        self.redis = client
        self.keys = Keys(key_prefix)
        self.history = History(client, self.keys, max_events, 3600)
        self._prevs: dict[tuple[str, str, int], int] = {}

    def accept(self, channel: str, events: list[tuple[str, str]], exclude: str | None = None,
               app_id: str = APP_ID) -> list[int]:
        accepted = self.history.accept(app_id, [(channel, e, d, exclude) for e, d in events])
        for a in accepted:
            self._prevs[(app_id, channel, a.serial)] = a.prev
        return [a.serial for a in accepted]

    def prev(self, channel: str, serial: int, app_id: str = APP_ID) -> int:
        """The serial before ``serial`` on the channel, as the accept script gave it."""
        return self._prevs[(app_id, channel, serial)]

    def publish(self, channel: str, event: str, data: Any, serial: int | None = None,
                exclude: str | None = None, app_id: str = APP_ID) -> None:
        """What a worker publishes for an accepted event (``serial``, and its prev), or a
        serial-less server-made event, on the channel's topic."""
        prev = None if serial is None else self.prev(channel, serial, app_id)
        self.redis.publish(self.keys.bus_channel(app_id, channel), BusEvent(
            app_id, channel, event, data, serial, exclude, prev=prev).encode())

    def raw(self, message: bytes) -> None:
        self.redis.publish(self.keys.bus, message)


def wait_until(predicate: Callable[[], Any], timeout: float = 5, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class RawClient:
    """A WebSocket client over a bare socket that records every frame the server writes,
    including any written after the server's own close frame (which a conforming client
    library stops reading at, hiding exactly what these tests look for)."""

    def __init__(self, base_url: str, key: str = KEY, query: str = PUSHER_JS_QUERY) -> None:
        import base64
        import os
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(base_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /app/{key}?{query} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, payload: bytes | str) -> None:
        import os

        data = payload.encode() if isinstance(payload, str) else payload
        n = len(data)
        if n < 126:
            header = bytes((0x81, 0x80 | n))
        elif n < 65536:
            header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def send_json(self, msg: dict[str, Any]) -> None:
        self.send_text(json.dumps(msg))

    def frames_until_eof(self, timeout: float = 5) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every frame the server sends until it hangs up."""
        deadline = time.monotonic() + timeout
        data = self.buffer
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("the server did not hang up")
        return _parse_frames(data)

    def close(self) -> None:
        self.sock.close()


def _parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i:i + 8], "big"), i + 8
        frames.append((opcode, data[i:i + n]))
        i += n
    return frames
