"""The Beams device, publish (validation) and customer APIs over Flask's test client, on real
Redis. Delivery is in test_push_delivery.py."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from beams_harness import APP_ID, SECRET
from pusher_push_notifications import PushNotifications

from gateway.state.devices import DeviceStore

DEV = f"/device_api/v1/instances/{APP_ID}"
PUB = f"/publish_api/v1/instances/{APP_ID}/publishes"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def register(client, platform="fcm", token=None, **extra):
    body = {"token": token or uuid.uuid4().hex * 2, "metadata": {"sdkVersion": "1.0"}, **extra}
    resp = client.post(f"{DEV}/devices/{platform}", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_register_devices_and_same_token_same_device(client):
    fcm = register(client, "fcm", token="fcm-token-a")
    assert fcm["id"].startswith("fcm-") and fcm["initialInterestSet"] == []
    again = register(client, "fcm", token="fcm-token-a")
    assert again["id"] == fcm["id"]
    apns = register(client, "apns", bundleIdentifier="com.example.app")
    assert apns["id"].startswith("apns-")
    got = client.get(f"{DEV}/devices/apns/{apns['id']}").get_json()
    assert got["id"] == apns["id"] and got["metadata"] == {"sdkVersion": "1.0"}
    # a device id on the wrong platform is not found
    assert client.get(f"{DEV}/devices/fcm/{apns['id']}").status_code == 404


def test_known_previous_client_ids_keep_interests(client):
    old = register(client, "fcm")
    client.put(f"{DEV}/devices/fcm/{old['id']}/interests", json={"interests": ["a", "b"]})
    new = register(
        client, "fcm", token="fresh-" + uuid.uuid4().hex, knownPreviousClientIds=[old["id"]]
    )
    assert new["id"] == old["id"] and new["initialInterestSet"] == ["a", "b"]


def test_interests_replace_add_remove_and_paging(client):
    dev = register(client)["id"]
    base = f"{DEV}/devices/fcm/{dev}/interests"
    assert client.put(base, json={"interests": ["x", "y", "y"]}).status_code == 200
    assert client.post(f"{base}/hello-world_=@,.;").status_code == 200
    assert client.delete(f"{base}/x").status_code == 200
    body = client.get(base).get_json()
    assert body == {"interests": ["hello-world_=@,.;", "y"], "responseMetadata": {}}
    client.put(base, json={"interests": [f"i{n:03}" for n in range(150)]})
    first = client.get(base).get_json()
    assert len(first["interests"]) == 100 and first["responseMetadata"]["nextCursor"] == "i099"
    second = client.get(f"{base}?cursor=i099").get_json()
    assert len(second["interests"]) == 50 and second["responseMetadata"] == {}


@pytest.mark.parametrize("name", ["has space", "a" * 165, "colon:bad", "slash%2Fbad", "é"])
def test_invalid_interest_names(client, name):
    dev = register(client)["id"]
    resp = client.put(f"{DEV}/devices/fcm/{dev}/interests", json={"interests": [name]})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "Invalid interest name"
    assert set(resp.get_json()) == {"error", "description"}


def test_too_many_interests_per_device(client, r, push_settings):
    dev = register(client)["id"]
    resp = client.put(
        f"{DEV}/devices/fcm/{dev}/interests", json={"interests": [f"n{i}" for i in range(5001)]}
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "Too many interests"
    assert (
        client.put(
            f"{DEV}/devices/fcm/{dev}/interests", json={"interests": [f"n{i}" for i in range(5000)]}
        ).status_code
        == 200
    )
    assert client.post(f"{DEV}/devices/fcm/{dev}/interests/one-more").status_code == 400
    assert client.post(f"{DEV}/devices/fcm/{dev}/interests/n1").status_code == 200


def test_delete_device_cleans_indexes(client, r, push_settings):
    dev = register(client, token="tok-del")["id"]
    client.put(f"{DEV}/devices/fcm/{dev}/interests", json={"interests": ["gone"]})
    assert client.delete(f"{DEV}/devices/fcm/{dev}").status_code == 200
    assert client.get(f"{DEV}/devices/fcm/{dev}").status_code == 404
    p = push_settings.redis.key_prefix
    assert not r.exists(
        f"{p}bi:{APP_ID}:gone", f"{p}bt:{APP_ID}:fcm:tok-del", f"{p}bd:{APP_ID}:{dev}"
    )


def test_metadata_and_token_update(client, r, push_settings):
    dev = register(client, token="tok-old")["id"]
    assert (
        client.put(f"{DEV}/devices/fcm/{dev}/metadata", json={"sdkVersion": "2"}).status_code == 200
    )
    assert client.get(f"{DEV}/devices/fcm/{dev}").get_json()["metadata"] == {"sdkVersion": "2"}
    assert (
        client.put(f"{DEV}/devices/fcm/{dev}/token", json={"token": "tok-new"}).status_code == 200
    )
    store = DeviceStore(r, push_settings.redis.key_prefix)
    assert store.get(APP_ID, dev).token == "tok-new"
    assert register(client, token="tok-new")["id"] == dev
    assert register(client, token="tok-old")["id"] != dev


def test_set_user_with_sdk_token(client, r, push_settings):
    sdk = PushNotifications(APP_ID, SECRET)
    dev = register(client)["id"]
    url = f"{DEV}/devices/fcm/{dev}/user"
    assert client.put(url).status_code == 401
    token = sdk.generate_token("alice")["token"]
    assert client.put(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(f"{DEV}/devices/fcm/{dev}").get_json()["userId"] == "alice"
    other = sdk.generate_token("bob")["token"]
    resp = client.put(url, headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 400
    assert resp.get_json()["description"] == "A User Id is already associated with this device."
    wrong_iss = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 60, "iss": "https://x"}, SECRET, "HS256"
    )
    assert client.put(url, headers={"Authorization": f"Bearer {wrong_iss}"}).status_code == 403
    no_sub = jwt.encode(
        {"exp": int(time.time()) + 60, "iss": f"https://{APP_ID}.pushnotifications.pusher.com"},
        SECRET,
        "HS256",
    )
    assert client.put(url, headers={"Authorization": f"Bearer {no_sub}"}).status_code == 400
    forged = PushNotifications(APP_ID, "not-the-secret-" + "x" * 32).generate_token("alice")[
        "token"
    ]
    assert client.put(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # the customer API deletes the user and their devices
    assert client.delete(f"/customer_api/v1/instances/{APP_ID}/users/alice").status_code == 401
    assert (
        client.delete(f"/customer_api/v1/instances/{APP_ID}/users/alice", headers=AUTH).status_code
        == 200
    )
    assert client.get(f"{DEV}/devices/fcm/{dev}").status_code == 404
    assert DeviceStore(r, push_settings.redis.key_prefix).user_devices(APP_ID, "alice") == []


def test_publish_auth_instance_and_validation(client):
    good = {"interests": ["news"], "fcm": {"notification": {"title": "t"}}}
    resp = client.post(f"{PUB}/interests", json=good)
    assert resp.status_code == 401 and set(resp.get_json()) == {"error", "description"}
    assert (
        client.post(
            f"{PUB}/interests", json=good, headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/publish_api/v1/instances/nope/publishes/interests", json=good, headers=AUTH
        ).status_code
        == 404
    )

    def post(body, kind="interests"):
        return client.post(f"{PUB}/{kind}", json=body, headers=AUTH)

    assert post({**good, "interests": ["bad name"]}).get_json()["error"] == "Invalid interest name"
    too_many = post({**good, "interests": [f"i{n}" for n in range(101)]})
    assert too_many.status_code == 400 and too_many.get_json()["error"] == "Too many interests"
    assert post({**good, "interests": []}).status_code == 400
    assert post({"interests": ["news"]}).status_code == 422  # no platform section
    assert post({"users": [f"u{n}" for n in range(1001)], "fcm": {}}, "users").status_code == 400
    assert post({"users": ["x" * 165], "fcm": {}}, "users").status_code == 400
    big = post({**good, "fcm": {"data": {"blob": "x" * 11000}}})
    assert big.status_code == 413 and big.get_json()["error"] == "Payload Too Large"
    big_apns = post({"interests": ["news"], "apns": {"aps": {"alert": "x" * 5000}}})
    assert big_apns.status_code == 413
    not_json = client.post(
        f"{PUB}/interests", data="{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    ok = post(good)
    assert ok.status_code == 200 and ok.get_json()["publishId"].startswith("pubid-")
    status = client.get(f"{PUB}/{ok.get_json()['publishId']}", headers=AUTH).get_json()
    assert status["publishId"] == ok.get_json()["publishId"]
    assert client.get(f"{PUB}/pubid-unknown", headers=AUTH).status_code == 404


def test_publish_rate_limit(beams_app):
    from gateway.api.beams import beams_ctx

    with beams_app.app_context():
        store = beams_ctx().publishes
        limit = beams_ctx().settings.push.publish_rate_limit
    client = beams_app.test_client()
    body = json.dumps({"interests": ["rl"], "fcm": {"notification": {"title": "t"}}})
    # Fill this second's counter, then the next publish is refused.
    now = int(time.time())
    store.r.set(store.keys.rate(APP_ID, now), limit)
    store.r.set(store.keys.rate(APP_ID, now + 1), limit)
    resp = client.post(
        f"{PUB}/interests", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    store.r.delete(store.keys.rate(APP_ID, now), store.keys.rate(APP_ID, now + 1))
