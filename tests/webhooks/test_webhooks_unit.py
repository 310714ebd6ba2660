"""Pure parts of webhooks: address vetting (SSRF), signing, the retry schedule, settings.
Nothing here dials anything but 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import socket
import threading
import time

import pusher
import pytest

from config.settings import ConfigError, Settings, load_settings
from gateway.webhooks import ssrf
from gateway.webhooks.store import Delivery
from workers.providers import webhook_http
from workers.webhooks.delivery import build_request, retry_delay

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2001:4860:4860::8888"]
PRIVATE = [
    "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1", "239.255.255.250",
    "255.255.255.255", "198.18.0.1", "192.0.2.1", "::1", "::", "fe80::1", "fe80::1%eth0",
    "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "2002:7f00:1::1", "2002:a00:1::1", "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe", "2001:db8::1",
]


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_allowed(ip):
    assert ssrf.address_allowed(ip)


@pytest.mark.parametrize("ip", PRIVATE)
def test_private_addresses_refused(ip):
    assert not ssrf.address_allowed(ip)


def test_allowed_networks_open_exactly_those_networks():
    allowed = ssrf.parse_networks(["127.0.0.0/8", "10.0.0.0/24"])
    assert ssrf.address_allowed("127.0.0.1", allowed)
    assert ssrf.address_allowed("::ffff:127.0.0.1", allowed)  # mapped: judged as IPv4
    assert ssrf.address_allowed("10.0.0.200", allowed)
    assert not ssrf.address_allowed("10.0.1.1", allowed)
    assert not ssrf.address_allowed("169.254.169.254", allowed)
    assert not ssrf.address_allowed("::1", allowed)


def test_vet_refuses_if_any_address_is_private():
    with pytest.raises(ssrf.Refused, match="10.0.0.1"):
        ssrf.vet("rebind.example", ["8.8.8.8", "10.0.0.1"])
    assert ssrf.vet("ok.example", ["8.8.8.8", "8.8.8.8", "1.1.1.1"]) == ["8.8.8.8", "1.1.1.1"]
    with pytest.raises(ssrf.Refused, match="metadata"):
        ssrf.vet("metadata.google.internal.", ["8.8.8.8"])
    with pytest.raises(ssrf.Refused):
        ssrf.vet("empty.example", [])


def test_post_checks_the_address_actually_dialled(monkeypatch):
    """A name that resolves to loopback is refused without allowed_networks: nothing dialled."""
    dialled = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: dialled.append(a) or real(*a, **k))
    for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x",
                "http://2130706433:9/x", "http://0x7f.1:9/x"):
        r = webhook_http.post(url, b"{}", {}, timeout=1)
        assert r.error in ("refused", "dns"), (url, r)
    assert dialled == []
    # A rebinding name: the resolver answers public first, private second -> refused.
    monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["8.8.8.8", "127.0.0.1"])
    r = webhook_http.post("http://rebind.example/x", b"{}", {}, timeout=1)
    assert r.error == "refused" and "127.0.0.1" in r.detail
    assert dialled == []


def test_post_dials_the_vetted_address_keeping_the_host_header(monkeypatch, receiver):
    """The name is resolved once and the vetted IP is dialled; Host stays the URL's host."""
    monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["127.0.0.1"])
    allowed = ssrf.parse_networks(["127.0.0.0/8"])
    r = webhook_http.post(f"http://hooks.example.test:{receiver.port}/in?x=1", b"{}",
                          {"Content-Type": "application/json"}, timeout=2,
                          allowed_networks=allowed)
    assert r.status == 200 and r.ip == "127.0.0.1"
    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"
    assert receiver.requests[0].path == "/in?x=1"


def test_a_stalled_name_lookup_ends_at_the_deadline(monkeypatch):
    """getaddrinfo has no timeout, and a webhook host's DNS server is run by its owner: the
    attempt gives up at its deadline (the lookup stands for a resolver that never answers)."""
    answer = threading.Event()
    monkeypatch.setattr(webhook_http, "resolve",
                        lambda host, port: answer.wait(30) and ["203.0.113.9"])
    started = time.monotonic()
    r = webhook_http.post("http://slow-dns.example/x", b"{}", {}, timeout=1)
    answer.set()
    assert r.error == "timeout" and "DNS" in r.detail, r
    assert time.monotonic() - started < 1.5


def test_retry_schedule_jitter_and_retry_after():
    s = Settings(webhooks={"retry_schedule": [5, 300, 1800], "jitter": 0.2,
                           "retry_after_max": 600})
    rng = random.Random(1)
    for n, base in enumerate([5, 300, 1800], start=1):
        for _ in range(50):
            d = retry_delay(s, n, None, rng)
            assert base * 0.8 <= d <= base * 1.2
    assert retry_delay(s, 4, None) is None  # 1 + 3 attempts: exhausted
    assert retry_delay(s, 1, 120, rng) >= 120  # Retry-After lengthens...
    assert retry_delay(s, 1, 10**6, rng) == 600  # ...up to retry_after_max
    assert retry_delay(s, 3, 1, rng) >= 1800 * 0.8  # ...and never shortens


def test_retry_after_parsing():
    assert webhook_http.parse_retry_after("7") == 7
    assert webhook_http.parse_retry_after(None) is None
    assert webhook_http.parse_retry_after("soon") is None
    d = webhook_http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert d == 0.0  # in the past


def _delivery() -> Delivery:
    return Delivery(id="wh_0123abc", app_id="1", url="http://x/", endpoint_id="e",
                    events=b'[{"name":"channel_occupied","channel":"c\\u00e9"}]',
                    created_ms=1, status="pending", next_ms=1)


def test_request_is_signed_for_the_pusher_sdk_and_standard_webhooks():
    import time

    s = Settings(apps=[{"id": "1", "key": "k", "secret": "s3cret", "webhooks": [
        {"url": "http://x/", "events": ["channel_occupied"], "standard_webhooks": True,
         "signing_secret": "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode(),
         "headers": {"X-Team": "a"}}]}])
    app = s.apps[0]
    now = int(time.time())
    body, headers = build_request(app, app.webhooks[0], _delivery(), now * 1000, now)
    assert body == (b'{"time_ms":%d,"events":[{"name":"channel_occupied","channel":"c\\u00e9"}]}'
                    % (now * 1000))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Team"] == "a"
    sdk = pusher.Pusher(app_id="1", key="k", secret="s3cret")
    assert sdk.validate_webhook(headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body)
    # Standard Webhooks: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>.
    assert headers["webhook-id"] == "wh_0123abc"
    signed = f"wh_0123abc.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def test_webhook_settings_are_validated(tmp_path):
    def load(text: str) -> Settings:
        p = tmp_path / "c.toml"
        p.write_text(text)
        return load_settings(p, environ={})

    s = load('[webhooks]\nallowed_networks = ["127.0.0.0/8"]\nretry_schedule = [1, 2]\n'
             '[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n'
             '[[apps.webhooks]]\nurl = "https://example.com/pusher/webhooks"\n'
             'events = ["channel_occupied", "channel_vacated"]\nchannel_prefix = "private-"\n')
    assert s.apps[0].webhooks[0].channel_prefix == "private-"
    assert s.webhooks.debounce == 3.0
    bad = [
        '[webhooks]\nallowed_networks = ["nope"]\n',
        '[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n[[apps.webhooks]]\nurl = "ftp://x/"\n'
        'events = ["cache_miss"]\n',
        '[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n[[apps.webhooks]]\nurl = "http://x/"\n'
        'events = ["no_such_event"]\n',
        '[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n[[apps.webhooks]]\nurl = "http://x/"\n'
        'events = ["cache_miss"]\nheaders = {"X-Pusher-Signature" = "forged"}\n',
    ]
    for text in bad:
        with pytest.raises(ConfigError):
            load(text)
