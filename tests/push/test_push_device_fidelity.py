"""The device API as the official Beams SDKs call it (request bodies copied from their sources:
push-notifications-android ``PushNotificationService.kt``/``RegisterRequest``,
push-notifications-swift ``Register``/``Metadata``/``NetworkService.swift``,
push-notifications-web ``push-notifications.js``), on real Redis."""

from __future__ import annotations

import uuid

from beams_harness import APP_ID

from gateway.state.devices import DeviceStore

DEV = f"/device_api/v1/instances/{APP_ID}"
ANDROID_HEADERS = {"X-Pusher-Library": "pusher-push-notifications-android 1.10.0"}
SWIFT_HEADERS = {"X-Pusher-Library": "push-notifications-swift 4.0.0",
                 "Content-Type": "application/json"}


def test_ios_registration_keeps_metadata_exactly_and_the_bundle_beside_it(client, r,
                                                                           push_settings):
    token = uuid.uuid4().hex * 2
    body = {"token": token, "bundleIdentifier": "com.example.ios",
            "metadata": {"sdkVersion": "4.0.0", "iosVersion": "17.2"}}
    resp = client.post(f"{DEV}/devices/apns", json=body, headers=SWIFT_HEADERS)
    assert resp.status_code == 200, resp.get_json()
    device_id = resp.get_json()["id"]
    assert resp.get_json() == {"id": device_id, "initialInterestSet": []}
    got = client.get(f"{DEV}/devices/apns/{device_id}", headers=SWIFT_HEADERS).get_json()
    assert got["metadata"] == {"sdkVersion": "4.0.0", "iosVersion": "17.2"}
    store = DeviceStore(r, push_settings.redis.key_prefix)
    assert r.hget(store.keys.device(APP_ID, device_id), "bundle") == "com.example.ios"
    # The SDK's metadata update (macOS build: iosVersion left out) replaces it as sent.
    update = {"sdkVersion": "4.0.1", "macosVersion": "14.1"}
    assert client.put(f"{DEV}/devices/apns/{device_id}/metadata", json=update,
                      headers=SWIFT_HEADERS).status_code == 200
    got = client.get(f"{DEV}/devices/apns/{device_id}").get_json()
    assert got["metadata"] == update


def test_android_registration_and_token_refresh(client):
    body = {"token": "fcm-" + uuid.uuid4().hex, "knownPreviousClientIds": [],
            "metadata": {"sdkVersion": "1.10.0", "androidVersion": "14"}}
    resp = client.post(f"{DEV}/devices/fcm", json=body, headers=ANDROID_HEADERS)
    device_id = resp.get_json()["id"]
    assert client.get(f"{DEV}/devices/fcm/{device_id}").get_json()["metadata"] == body["metadata"]
    assert client.put(f"{DEV}/devices/fcm/{device_id}/token",
                      json={"token": "fcm-new-" + uuid.uuid4().hex}).status_code == 200


def test_a_bad_token_is_invalid_token_which_the_android_sdk_does_not_retry(client):
    for body in ({"token": "", "knownPreviousClientIds": [], "metadata": {}},
                 {"knownPreviousClientIds": [], "metadata": {}}, {"token": 42}):
        resp = client.post(f"{DEV}/devices/fcm", json=body)
        assert resp.status_code == 400
        assert resp.get_json()["error"] == "InvalidToken", resp.get_json()


def test_a_bundle_identifier_that_is_not_a_string_is_refused(client):
    body = {"token": uuid.uuid4().hex * 2, "bundleIdentifier": ["x"], "metadata": {}}
    resp = client.post(f"{DEV}/devices/apns", json=body)
    assert resp.status_code == 400 and "bundleIdentifier" in resp.get_json()["description"]


def test_unknown_device_is_404_with_a_description(client):
    resp = client.get(f"{DEV}/devices/apns/apns-{uuid.uuid4()}")
    assert resp.status_code == 404 and resp.get_json()["description"]
