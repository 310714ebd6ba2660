"""APNs sends never outrun the HTTP/2 send window: a burst whose bodies add up to far more
than the connection's 64 KiB window goes out as the window reopens, instead of aioapns catching
FlowControlError and sleeping a second per refusal (real aioapns, and libcurl's HTTP/2, against
the APNs emulator)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from beams_harness import hex_token
from emulators.apns import Fault as ApnsFault

from config.settings import PushSettings
from workers.providers.apns import AioapnsSender, ApnsSender, build_request
from workers.providers.apns_curl import CurlApnsSender

CLIENTS = pytest.mark.parametrize("client", ["curl", "aioapns"])


@CLIENTS
def test_burst_larger_than_the_send_window(apns_emu, caplog, client):
    settings = PushSettings(
        apns_client=client,
        apns_host="localhost",
        apns_port=apns_emu.port,
        apns_ca_file=apns_emu.ca_file,
        apns_concurrency=300,
        apns_max_connections=1,
        send_timeout=10.0,
    )
    sender = ApnsSender(
        apns_emu.key_pem, apns_emu.key_id, apns_emu.team_id, apns_emu.topic, False, settings
    )
    body = {"aps": {"alert": {"title": "w", "body": "x" * 1500}}}  # 300 x ~1.6 KB = ~7 windows
    tokens = [hex_token() for _ in range(300)]
    items = [(t, t, build_request(body, f"pubid-{uuid.uuid4()}", t)) for t in tokens]
    caplog.set_level(logging.DEBUG, logger="aioapns")
    started = time.monotonic()
    results = [r for r in sender.send(items) if r is not None]
    elapsed = time.monotonic() - started
    sender.close()
    assert sorted(k for k, _ in results) == sorted(tokens)
    assert all(r.outcome == "delivered" for _, r in results), results[:3]
    assert not [r for r in caplog.records if "FlowControlError" in r.getMessage()]
    assert elapsed < 8, elapsed  # each FlowControlError used to cost a 1 s sleep
    assert all(len(apns_emu.messages(t)) == 1 for t in tokens)


def test_connections_forget_finished_streams(apns_emu):
    """aioapns keeps a stream -> request entry for every successful send; ours drops it when
    the stream ends, so a long-lived connection does not grow with each notification."""
    settings = PushSettings(
        apns_host="localhost",
        apns_port=apns_emu.port,
        apns_ca_file=apns_emu.ca_file,
        apns_max_connections=1,
    )
    sender = AioapnsSender(
        apns_emu.key_pem, apns_emu.key_id, apns_emu.team_id, apns_emu.topic, False, settings
    )
    dead = hex_token()
    apns_emu.unregistered.add(dead)
    tokens = [hex_token() for _ in range(200)] + [dead]
    items = [(t, t, build_request({"aps": {"alert": "s"}}, "pubid-s", t)) for t in tokens]
    outcomes = {k: r.outcome for k, r in (x for x in sender.send(items) if x is not None)}
    assert outcomes[dead] == "dead" and list(outcomes.values()).count("delivered") == 200
    (connection,) = sender.client.pool.connections
    assert connection.request_streams == {} and connection.requests == {}
    sender.close()


@CLIENTS
def test_a_timed_out_batch_leaves_another_batch_s_connection_alone(apns_emu, client):
    """Under the threads pool two tasks share a sender: the connections are recycled after a
    batch with a timeout, but not under a send of another batch still in flight (closing it
    would fail a notification APNs may be delivering, and its retry would send it twice)."""
    settings = PushSettings(
        apns_host="localhost",
        apns_port=apns_emu.port,
        apns_ca_file=apns_emu.ca_file,
        apns_max_connections=1,
        send_timeout=2.0,
        apns_client=client,
    )
    sender = ApnsSender(
        apns_emu.key_pem, apns_emu.key_id, apns_emu.team_id, apns_emu.topic, False, settings
    )
    hung, slow = hex_token(), hex_token()
    apns_emu.script(hung, ApnsFault(hang=True))  # times out at 2.0 s
    apns_emu.script(slow, ApnsFault(status=200, reason=None, delay=1.5))  # answered at 2.5 s
    outcomes: dict[str, str] = {}

    def send(token: str) -> None:
        items = [(token, token, build_request({"aps": {"alert": "t"}}, "pubid-t", token))]
        outcomes.update((k, r.outcome) for k, r in (x for x in sender.send(items) if x))

    first = threading.Thread(target=send, args=(hung,))
    first.start()
    time.sleep(1.0)
    send(slow)
    first.join()
    sender.close()
    assert outcomes == {hung: "retry", slow: "delivered"}
    assert len(apns_emu.messages(slow)) == 1  # not failed by the recycle, so not sent again


def test_the_curl_client_is_the_default_and_keeps_nothing_per_send(apns_emu):
    """libcurl's HTTP/2 is the default client; after a batch (a dead token among them) it holds
    no transfer, and no more easy handles than were in flight at once."""
    settings = PushSettings(
        apns_host="localhost",
        apns_port=apns_emu.port,
        apns_ca_file=apns_emu.ca_file,
        apns_max_connections=1,
        apns_concurrency=50,
    )
    sender = ApnsSender(
        apns_emu.key_pem, apns_emu.key_id, apns_emu.team_id, apns_emu.topic, False, settings
    )
    assert isinstance(sender, CurlApnsSender)
    dead = hex_token()
    apns_emu.unregistered.add(dead)
    tokens = [hex_token() for _ in range(400)] + [dead]
    items = [(t, t, build_request({"aps": {"alert": "s"}}, "pubid-s", t)) for t in tokens]
    outcomes = {k: r.outcome for k, r in (x for x in sender.send(items) if x is not None)}
    assert outcomes[dead] == "dead" and list(outcomes.values()).count("delivered") == 400
    assert sender.http.in_flight() == 0 and len(sender.http._free) <= 50
    headers, body = apns_emu.messages(tokens[0])[0]
    assert body == {"aps": {"alert": "s"}, "data": {"pusher": {"publishId": "pubid-s"}}}
    assert headers["apns-topic"] == apns_emu.topic and headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10" and len(headers["apns-id"]) == 36
    assert "content-type" not in headers and "expect" not in headers
    sender.close()
