"""The benchmark's granian-served APNs emulator checks what the tests' one checks: HTTP/2 over
TLS only, the provider JWT signed by its key, the topic; and it counts deliveries exactly."""

from __future__ import annotations

import requests
from cryptography.hazmat.primitives import serialization

from config.settings import PushSettings
from emulators.apns import make_p8
from emulators.apns_fast import GranianApnsEmulator
from gateway.embedded_redis import free_port
from workers.providers.apns import ApnsSender, build_request


def sender(emu: GranianApnsEmulator, key_pem: str, topic: str):
    settings = PushSettings(
        apns_host="localhost", apns_port=emu.port, apns_ca_file=emu.ca_file, send_timeout=10.0
    )
    return ApnsSender(key_pem, emu.key_id, emu.team_id, topic, False, settings)


def send(snd, tokens: list[str]) -> dict[str, str]:
    items = [(t, t, build_request({"aps": {"alert": "x"}}, "pubid-f", t)) for t in tokens]
    results = {k: f"{r.outcome} {r.detail}".strip() for k, r in (x for x in snd.send(items) if x)}
    snd.close()
    return results


def test_checks_and_counts(tmp_path):
    emu = GranianApnsEmulator(tmp_path, free_port()).start()
    try:
        good = ["ab" * 32, "cd" * 32]
        assert send(sender(emu, emu.key_pem, emu.topic), [*good, "not-hex"]) == {
            good[0]: "delivered",
            good[1]: "delivered",
            "not-hex": "dead 400 BadDeviceToken",
        }
        foreign = make_p8()[0]
        assert send(sender(emu, foreign, emu.topic), ["ef" * 32]) == {
            "ef" * 32: "auth 403 InvalidProviderToken"
        }
        assert send(sender(emu, emu.key_pem, "com.other.app"), ["ef" * 32]) == {
            "ef" * 32: "auth 400 TopicDisallowed"
        }
        # HTTP/1.1 (no ALPN h2) is refused, as Apple does.
        plain = requests.post(
            f"https://127.0.0.1:{emu.port}/3/device/{'ab' * 32}", data=b"{}", verify=emu.ca_file
        )
        assert plain.status_code == 505
        assert emu.counts([*good, "ef" * 32]) == [1, 1, 0]
    finally:
        emu.stop()


def test_public_key_pem_round_trips(tmp_path):
    emu = GranianApnsEmulator(tmp_path, free_port())
    key = serialization.load_pem_private_key(emu.key_pem.encode(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.decode() == emu.public_pem
