"""HTTP/2 POSTs to one origin through libcurl (nghttp2: framing and HPACK in C), on an asyncio
loop.

Why: with aioapns over the pure-Python ``h2`` stack, building and HPACK-encoding request
headers was half of the worker's CPU per APNs notification and parsing the answers a fifth
(about 240 us per notification, 1,800/s per worker). libcurl multiplexes many transfers on a
few TLS connections and does all of the HTTP/2 work in C; Python only fills in each transfer
and collects its status and (error) body.

How it runs: one ``CurlMulti`` per client, driven by the loop through libcurl's socket API
(``M_SOCKETFUNCTION`` registers readers/writers with the loop, ``M_TIMERFUNCTION`` a loop
timer; both only schedule, they never re-enter libcurl). Everything is touched on the loop's
thread only. A POST whose caller gives up (cancelled, e.g. by its timeout) has its transfer
removed at once: libcurl resets that stream (RST_STREAM) and the connection and the other
streams on it carry on, so one hung answer delays only its own request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pycurl


def has_http2() -> bool:
    """True if this libcurl speaks HTTP/2 (the PyPI wheels' does, with nghttp2)."""
    return bool(pycurl.version_info()[4] & pycurl.VERSION_HTTP2)


class CurlH2Client:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: str,
        *,
        ca_file: str | None = None,
        max_connections: int = 2,
        max_streams: int = 1000,
        connect_timeout: float = 10.0,
    ) -> None:
        self.loop = loop
        self.origin = origin.rstrip("/")
        self.ca_file = ca_file
        self.max_connections = max(1, max_connections)
        self.max_streams = max_streams
        self.connect_timeout = connect_timeout
        self._free: list[Any] = []  # idle easy handles (each keeps its response buffer)
        self._active: dict[Any, asyncio.Future[tuple[int, bytes]]] = {}
        self._fds: dict[int, int] = {}  # fd -> what the loop watches it for
        self._timer: asyncio.TimerHandle | None = None
        self.multi = self._new_multi()

    # ------------------------------------------------------------------ requests

    async def post(self, path: str, headers: list[bytes], body: bytes) -> tuple[int, bytes]:
        """``(status, body)`` of one POST; raises ``ConnectionError`` on a transport error."""
        handle = self._free.pop() if self._free else self._new_handle()
        handle.setopt(pycurl.URL, self.origin + path)
        handle.setopt(pycurl.HTTPHEADER, headers)
        handle.setopt(pycurl.POSTFIELDS, body)
        future: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self._active[handle] = future
        self.multi.add_handle(handle)
        try:
            return await future
        except asyncio.CancelledError:
            if self._active.pop(handle, None) is not None:
                self.multi.remove_handle(handle)  # resets the stream, not the connection
                handle.buffer.clear()
                self._free.append(handle)
            raise

    def in_flight(self) -> int:
        return len(self._active)

    def reset(self) -> None:
        """Close every connection (a fresh multi handle); only call with nothing in flight."""
        for fd in list(self._fds):
            self._unwatch(fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in self._active:
            self.multi.remove_handle(handle)
        old, self.multi = self.multi, self._new_multi()
        for handle in self._free:
            handle.close()
        self._free.clear()
        old.close()
        for future in self._active.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))
        self._active.clear()

    def close(self) -> None:
        self.reset()

    # ------------------------------------------------------------------ set-up

    def _new_multi(self) -> Any:
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self.max_connections)
        multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, self.max_streams)
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        return multi

    def _new_handle(self) -> Any:
        handle = pycurl.Curl()
        handle.buffer = bytearray()
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        handle.setopt(pycurl.PIPEWAIT, 1)  # wait to multiplex rather than open a connection
        handle.setopt(pycurl.NOSIGNAL, 1)
        # No proxy from the environment (https_proxy…): APNs was always reached directly.
        handle.setopt(pycurl.PROXY, "")
        handle.setopt(pycurl.POST, 1)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(self.connect_timeout * 1000))
        handle.setopt(pycurl.WRITEFUNCTION, handle.buffer.extend)
        if self.ca_file:
            handle.setopt(pycurl.CAINFO, self.ca_file)
        return handle

    # ------------------------------------------------------------------ libcurl <-> loop

    def _on_socket(self, what: int, fd: int, multi: Any, _data: Any) -> None:
        if multi is not self.multi:
            return
        if what == pycurl.POLL_REMOVE:
            self._unwatch(fd)
            return
        self._unwatch(fd)
        if what & pycurl.POLL_IN:
            self.loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what & pycurl.POLL_OUT:
            self.loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        self._fds[fd] = what

    def _unwatch(self, fd: int) -> None:
        what = self._fds.pop(fd, 0)
        if what & pycurl.POLL_IN:
            self.loop.remove_reader(fd)
        if what & pycurl.POLL_OUT:
            self.loop.remove_writer(fd)

    def _on_timer(self, ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms >= 0:
            self._timer = self.loop.call_later(ms / 1000, self._act, pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        multi = self.multi
        while True:
            ret, _running = multi.socket_action(fd, event)
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        self._collect(multi)

    def _collect(self, multi: Any) -> None:
        while True:
            queued, done, failed = multi.info_read()
            for handle in done:
                self._finish(multi, handle, None)
            for handle, _errno, message in failed:
                self._finish(multi, handle, message or "transfer failed")
            if not queued:
                return

    def _finish(self, multi: Any, handle: Any, error: str | None) -> None:
        multi.remove_handle(handle)
        future = self._active.pop(handle, None)
        status = handle.getinfo(pycurl.RESPONSE_CODE)
        body = bytes(handle.buffer)
        handle.buffer.clear()
        self._free.append(handle)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(ConnectionError(error))
        else:
            future.set_result((status, body))
