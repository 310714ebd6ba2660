"""The APNs emulator for benchmarks: the same checks and answers (``ApnsRules``), served by
granian (Rust: TLS, HTTP/2 framing and HPACK) in a process of its own.

Why: the test emulator (emulators/apns.py) does HTTP/2 in pure Python (``h2``/``hpack``) and
cost about 200 us of CPU per request, twice the worker's; on the benchmark machine's two cores
it, not the worker, bounded the measured rate. Here the protocol work is in Rust, and Python
only checks each request as APNs does: the provider JWT (ES256, signed by the key the emulator
made, right ``kid`` and team; verified once per token string), topic, push type, priority,
payload, device token. Requests must be HTTP/2 over TLS (ALPN ``h2``) as Apple requires; any
other is answered 505. Faults (hangs, trickles) are the test emulator's job, not this one's.

Run as its own process (:class:`GranianApnsEmulator`); its CPU is the process's. The
benchmark reads back how many times each token was delivered through
``GET /_emulator/delivered`` (HTTP/1.1 allowed there only).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import requests
import trustme
from cryptography.hazmat.primitives import serialization

from emulators.apns import ApnsRules, make_p8

TESTS = Path(__file__).resolve().parents[1]
COUNTS_PATH = "/_emulator/delivered"


class ApnsApp(ApnsRules):
    """The RSGI application granian serves (configured from the environment)."""

    def __init__(self) -> None:
        public_key = serialization.load_pem_public_key(os.environ["APNS_EMU_PUBLIC_KEY"].encode())
        super().__init__(
            os.environ["APNS_EMU_TEAM_ID"],
            os.environ["APNS_EMU_KEY_ID"],
            os.environ["APNS_EMU_TOPIC"],
            public_key,
        )
        self.record_messages = False
        self.good_auth: set[str] = set()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == COUNTS_PATH:
            proto.response_bytes(200, [("content-type", "application/json")], self._counts())
            return
        body = await proto()
        if scope.http_version != "2":
            proto.response_empty(505, [])
            return
        headers = dict(scope.headers.items())
        headers[":method"] = scope.method
        headers[":path"] = scope.path
        auth = headers.get("authorization")
        status, reason, _fault = self.respond(headers, body, auth in self.good_auth)
        if status != 403 and auth:
            self.good_auth.add(auth)
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        if status == 200:
            proto.response_empty(200, [("apns-id", apns_id)])
            return
        payload: dict[str, Any] = {"reason": reason}
        if status == 410:
            payload["timestamp"] = int(time.time() * 1000)
        proto.response_bytes(
            status,
            [("apns-id", apns_id), ("content-type", "application/json")],
            json.dumps(payload).encode(),
        )

    def _counts(self) -> bytes:
        with self.lock:
            return json.dumps({t: len(sent) for t, sent in self.delivered.items()}).encode()


class GranianApnsEmulator:
    """Starts granian serving :class:`ApnsApp` over TLS (a CA made now, as the test emulator's)
    on ``port``; ``key_pem``, ``key_id``, ``team_id``, ``topic``, ``ca_file`` as the test
    emulator has them."""

    def __init__(
        self,
        tmp_dir: Path,
        port: int,
        team_id: str = "TEAM123456",
        key_id: str = "KEY1234567",
        topic: str = "com.example.app",
    ) -> None:
        self.team_id, self.key_id, self.topic, self.port = team_id, key_id, topic, port
        self.key_pem, public_key = make_p8()
        self.public_pem = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        ca = trustme.CA()
        self.ca_file = str(tmp_dir / "apns-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        self.cert_file, self.key_file = str(tmp_dir / "apns.pem"), str(tmp_dir / "apns.key")
        leaf.cert_chain_pems[0].write_to_path(self.cert_file)
        leaf.private_key_pem.write_to_path(self.key_file)
        self.log_path = tmp_dir / "apns-granian.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GranianApnsEmulator:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
            "APNS_EMU_PUBLIC_KEY": self.public_pem,
            "APNS_EMU_TEAM_ID": self.team_id,
            "APNS_EMU_KEY_ID": self.key_id,
            "APNS_EMU_TOPIC": self.topic,
        }
        args = [
            sys.executable, "-m", "granian", "--interface", "rsgi", "--http", "auto",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--runtime-threads", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning",
            "--http2-max-concurrent-streams", "1000",
            "--ssl-certificate", self.cert_file, "--ssl-keyfile", self.key_file,
            "emulators.apns_fast:app",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, env=env, cwd=TESTS, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"granian did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
        except OSError:
            return False
        return True

    def counts(self, tokens: list[str]) -> list[int]:
        """How many times each token was delivered."""
        answer = requests.get(
            f"https://127.0.0.1:{self.port}{COUNTS_PATH}", verify=self.ca_file, timeout=60
        )
        answer.raise_for_status()
        delivered = answer.json()
        return [delivered.get(t, 0) for t in tokens]

    def family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, AttributeError):
            return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


app = ApnsApp() if "APNS_EMU_PUBLIC_KEY" in os.environ else None
