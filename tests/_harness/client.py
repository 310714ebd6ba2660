"""A small Pusher WebSocket client that sends exactly what pusher-js 8 sends.

- URL ``/app/{key}?protocol=7&client=js&version=8.4.0&flash=false``;
- ``{"event":"pusher:subscribe","data":{"auth":"","channel":"..."}}`` for public channels,
  ``{"auth":"<key>:<sig>","channel":"..."}`` for private/encrypted ones and
  ``{"auth":"...","channel_data":"...","channel":"..."}`` for presence ones, the auth made with
  the official ``pusher`` SDK's ``authenticate`` (what an app's auth endpoint returns);
- ``{"event":"pusher:ping","data":{}}``, ``{"event":"pusher:unsubscribe","data":{"channel":...}}``.

Built on the synchronous ``websockets`` client. Frames read while waiting for something else
are kept, in order, so ``wait_for`` never loses a frame.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

Frame = dict[str, Any]


class RejectedConnection(Exception):
    """The server answered the handshake with ``pusher:error`` (and usually closed)."""

    def __init__(self, error: Frame, close_code: int | None) -> None:
        self.error = error
        self.close_code = close_code
        super().__init__(f"pusher:error {error.get('data')} then close code {close_code}")


def data_of(frame: Frame) -> Any:
    """A frame's ``data``, decoded once more when it is a JSON string (as pusher-js does)."""
    data = frame.get("data")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


class PusherClient:
    def __init__(self, ws: ClientConnection, auth: Any = None) -> None:
        self.ws = ws
        self.auth = auth  # a pusher.Pusher (server SDK) that signs subscriptions
        self.pending: list[Frame] = []
        self.socket_id: str = ""
        self.activity_timeout: int | None = None

    # ------------------------------------------------------------------ connection

    @classmethod
    def connect(cls, url: str, auth: Any = None, timeout: float = 5.0,
                ssl: Any = None) -> PusherClient:
        """Open the socket and read ``pusher:connection_established`` (the first frame);
        ``ssl``: the SSLContext of a wss:// URL."""
        options: dict[str, Any] = dict(
            open_timeout=timeout, max_size=2**22, ping_interval=None, compression=None
        )
        if ssl is not None:
            options["ssl"] = ssl
        try:
            ws = connect(url, legacy=True, **options)  # websockets >= 17: no context manager
        except TypeError:
            ws = connect(url, **options)
        client = cls(ws, auth)
        frame = client._recv(timeout)
        if frame is None:
            ws.close()
            raise TimeoutError("no first frame from the server")
        if frame.get("event") == "pusher:error":
            code = client.wait_closed(timeout)
            raise RejectedConnection(frame, code)
        assert frame.get("event") == "pusher:connection_established", frame
        established = data_of(frame)
        assert isinstance(frame["data"], str), "connection_established data must be a string"
        client.socket_id = established["socket_id"]
        client.activity_timeout = established["activity_timeout"]
        return client

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> PusherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Read (and keep) frames until the server closes; the close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                frame = self._recv(max(0.01, deadline - time.monotonic()))
                if frame is not None:
                    self.pending.append(frame)
        except ConnectionClosed:
            pass
        return self.ws.close_code

    # ------------------------------------------------------------------ sending

    def send_raw(self, text: str | bytes) -> None:
        self.ws.send(text)

    def send_event(self, event: str, data: Any, channel: str | None = None) -> None:
        # pusher-js: JSON.stringify({event, data}) plus channel for client events.
        message: Frame = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.ws.send(json.dumps(message, separators=(",", ":")))

    def ping(self) -> Frame:
        self.send_event("pusher:ping", {})
        return self.wait_for("pusher:pong")

    def subscribe_message(
        self,
        channel: str,
        user_id: str | None = None,
        user_info: Any = None,
        auth: str | None = None,
        channel_data: str | None = None,
    ) -> Frame:
        """The ``data`` of pusher-js's ``pusher:subscribe`` for ``channel``."""
        if auth is None and channel.startswith(("private-", "presence-")):
            custom = None
            if channel.startswith("presence-"):
                custom = {"user_id": user_id}
                if user_info is not None:
                    custom["user_info"] = user_info
            signed = self.auth.authenticate(channel, self.socket_id, custom_data=custom)
            auth = signed["auth"]
            channel_data = signed.get("channel_data", channel_data)
        data: Frame = {"auth": auth or ""}
        if channel_data is not None:
            data["channel_data"] = channel_data
        data["channel"] = channel
        return data

    def subscribe(
        self, channel: str, user_id: str | None = None, user_info: Any = None, *,
        auth: str | None = None, channel_data: str | None = None, timeout: float = 5.0,
    ) -> Frame:
        """Subscribe and wait for the answer: ``subscription_succeeded`` (returned) or an error
        (raises AssertionError with the frame)."""
        self.send_event(
            "pusher:subscribe",
            self.subscribe_message(channel, user_id, user_info, auth, channel_data),
        )
        frame = self.wait_for(
            lambda f: (f.get("channel") == channel and f.get("event") in (
                "pusher_internal:subscription_succeeded", "pusher:subscription_error"))
            or f.get("event") == "pusher:error",
            timeout=timeout,
        )
        if frame["event"] != "pusher_internal:subscription_succeeded":
            raise AssertionError(f"subscription to {channel} refused: {frame}")
        return frame

    def subscribe_all(self, channels: list[str], window: int = 50, timeout: float = 30.0) -> None:
        """Subscribe to many public/private channels, ``window`` requests in flight at a time."""
        deadline = time.monotonic() + timeout
        for start in range(0, len(channels), window):
            chunk = channels[start : start + window]
            for channel in chunk:
                self.send_event("pusher:subscribe", self.subscribe_message(channel))
            waiting = set(chunk)
            while waiting:
                frame = self.wait_for(
                    lambda f, w=waiting: f.get("channel") in w or f.get("event") == "pusher:error",
                    timeout=max(0.01, deadline - time.monotonic()),
                )
                if frame["event"] != "pusher_internal:subscription_succeeded":
                    raise AssertionError(f"subscription refused: {frame}")
                waiting.discard(frame["channel"])

    def unsubscribe(self, channel: str) -> None:
        self.send_event("pusher:unsubscribe", {"channel": channel})

    # ------------------------------------------------------------------ receiving

    def _recv(self, timeout: float) -> Frame | None:
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        frame = json.loads(raw)
        assert isinstance(frame, dict), raw
        return frame

    def wait_for(
        self,
        event: str | Callable[[Frame], bool],
        channel: str | None = None,
        timeout: float = 5.0,
    ) -> Frame:
        """The first frame (kept ones first) with ``event`` (and ``channel``), or matching a
        predicate; frames read meanwhile are kept for later calls."""
        if callable(event):
            match = event
        else:
            def match(f: Frame) -> bool:
                return f.get("event") == event and (channel is None or f.get("channel") == channel)
        for i, frame in enumerate(self.pending):
            if match(frame):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no {event!r} on {channel!r} within {timeout}s; "
                    f"kept frames: {self.pending[-5:]}"
                )
            frame = self._recv(left)
            if frame is None:
                continue
            if match(frame):
                return frame
            self.pending.append(frame)

    def next_frame(self, timeout: float) -> Frame | None:
        """The next frame (kept ones first), or None after ``timeout`` seconds."""
        if self.pending:
            return self.pending.pop(0)
        return self._recv(timeout)

    def collect(
        self, event: str, channel: str, count: int, timeout: float = 30.0
    ) -> list[Frame]:
        """``count`` frames of ``event`` on ``channel``, in the order received."""
        def match(f: Frame) -> bool:
            return f.get("event") == event and f.get("channel") == channel

        out = [f for f in self.pending if match(f)]
        self.pending = [f for f in self.pending if not match(f)]
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(out)} of {count} {event!r} on {channel!r} in {timeout}s")
            frame = self._recv(min(left, 1.0))
            if frame is None:
                continue
            if match(frame):
                out.append(frame)
            else:
                self.pending.append(frame)
        return out

    def drain(self, quiet: float = 0.5, timeout: float = 10.0) -> list[Frame]:
        """Every frame (kept ones first) until none arrives for ``quiet`` seconds."""
        out, self.pending = self.pending, []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self._recv(quiet)
            if frame is None:
                break
            out.append(frame)
        return out

    def assert_nothing(self, match: Callable[[Frame], bool], within: float = 1.0) -> None:
        """No frame matching ``match`` arrives within ``within`` seconds (others are kept)."""
        seen = [f for f in self.pending if match(f)]
        assert not seen, f"unexpected {seen}"
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            frame = self._recv(left)
            if frame is None:
                break
            assert not match(frame), f"unexpected {frame}"
            self.pending.append(frame)
