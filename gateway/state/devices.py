"""Beams devices, interests and users in Redis (synchronous: API and push workers).

Key schema (``P`` = ``settings.redis.key_prefix``; ``{app}`` = the Beams instance id = app id):

| key                           | type   | holds                                              |
|-------------------------------|--------|----------------------------------------------------|
| P bd:{app}:{device}           | hash   | platform, token, user, metadata (JSON), created,   |
|                               |        | bundle (APNs bundleIdentifier, kept out of metadata)|
| P bdi:{app}:{device}          | set    | the device's interests                             |
| P bi:{app}:{interest}         | set    | device ids subscribed to the interest              |
| P bu:{app}:{user}             | set    | device ids associated with the user                |
| P bt:{app}:{platform}:{token} | string | device id registered with that provider token      |

Nothing expires: a device lives until it is deleted (device API, customer API, or a dead token
reported by the provider), and its index entries go with it.

Device ids are ``{platform}-{uuid4}`` (``fcm-…``, ``apns-…``, ``web-…``) as Beams gives them.
A web device's token is the web SDK's: base64 of the browser's PushSubscription JSON
(:func:`parse_web_subscription`). Registering a token that is already known returns the same
device, so an app that re-registers after a reinstall does not get two devices (and two
notifications). Interest sets are read with SSCAN
(:meth:`DeviceStore.scan_interest`), a page at a time, so no caller ever loads every device.

Multi-key changes run as WATCH/MULTI transactions so a device and its indexes never disagree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from gateway.state.keys import KeySpace
from gateway.state.redis_client import is_cluster, register_script

PLATFORMS = ("fcm", "apns", "web")
INTEREST_RE = re.compile(r"^[A-Za-z0-9_\-=@,.;]{1,164}$")
MAX_INTEREST_LENGTH = 164
MAX_INTERESTS_PER_DEVICE = 5000
MAX_USER_ID_LENGTH = 164
MAX_DEVICES_PER_USER_PER_PLATFORM = 100
MAX_TOKEN_LENGTH = 4096


def parse_web_subscription(token: str) -> dict[str, Any]:
    """The PushSubscription in a web device token; ValueError with the reason if it is not one."""
    try:
        padded = token + "=" * (-len(token) % 4)
        sub = json.loads(base64.b64decode(padded.replace("-", "+").replace("_", "/")))
    except (ValueError, binascii.Error):
        raise ValueError("the token is not base64 of a PushSubscription's JSON") from None
    if not isinstance(sub, dict):
        raise ValueError("the token is not base64 of a PushSubscription's JSON")
    endpoint, keys = sub.get("endpoint"), sub.get("keys")
    if not isinstance(endpoint, str) or urllib.parse.urlsplit(endpoint).scheme not in (
        "https", "http"
    ):
        raise ValueError("the PushSubscription has no http(s) endpoint")
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(k), str) and keys[k] for k in ("p256dh", "auth")
    ):
        raise ValueError("the PushSubscription lacks keys.p256dh and keys.auth")
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def valid_interest(name: object) -> bool:
    return isinstance(name, str) and INTEREST_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    platform: str
    token: str
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


_GET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('hmget', key, 'platform', 'token', 'user') end
return out
"""


class DeviceKeys(KeySpace):
    def device(self, app: str, device_id: str) -> str:
        return f"{self.prefix}bd:{self.app(app)}:{device_id}"

    def device_interests(self, app: str, device_id: str) -> str:
        return f"{self.prefix}bdi:{self.app(app)}:{device_id}"

    def interest(self, app: str, interest: str) -> str:
        return f"{self.prefix}bi:{self.app(app)}:{interest}"

    def user(self, app: str, user_id: str) -> str:
        return f"{self.prefix}bu:{self.app(app)}:{user_id}"

    def token(self, app: str, platform: str, token: str) -> str:
        return f"{self.prefix}bt:{self.app(app)}:{platform}:{token}"


class UserConflict(Exception):
    """The device is already associated with another user."""


class TooManyUserDevices(Exception):
    """The user already has the maximum number of devices on this platform."""


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class DeviceStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.keys = DeviceKeys(prefix, is_cluster(client))
        self._get_many = register_script(client, _GET_MANY)

    # ------------------------------------------------------------------ devices

    def register(
        self,
        app: str,
        platform: str,
        token: str,
        metadata: dict[str, Any] | None = None,
        previous_ids: Sequence[str] = (),
        bundle: str | None = None,
    ) -> tuple[str, list[str]]:
        """Register ``token``; return ``(device_id, interests)``.

        ``metadata`` is kept exactly as given (``GET`` returns it); ``bundle`` (the iOS SDK's
        ``bundleIdentifier``) is kept beside it, never inside it.

        The same token gives the same device back. Otherwise the first of ``previous_ids`` (the
        Android SDK's ``knownPreviousClientIds``) that still exists on this platform is reused
        with the new token, keeping its interests; else a new device is made.
        """
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}")
        token_key = self.keys.token(app, platform, token)
        existing = _s(self.r.get(token_key))
        fields = {} if metadata is None else {"metadata": json.dumps(metadata)}
        if bundle is not None:
            fields["bundle"] = bundle
        if existing and self.r.exists(self.keys.device(app, existing)):
            if fields:
                self.r.hset(self.keys.device(app, existing), mapping=fields)
            return existing, self.interests(app, existing)
        for prev in previous_ids:
            if isinstance(prev, str) and prev.startswith(platform + "-") and self.get(app, prev):
                self.update_token(app, prev, token)
                if fields:
                    self.r.hset(self.keys.device(app, prev), mapping=fields)
                return prev, self.interests(app, prev)
        device_id = f"{platform}-{uuid.uuid4()}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.keys.device(app, device_id),
            mapping={
                "platform": platform,
                "token": token,
                "metadata": json.dumps(metadata or {}),
                "created": str(int(time.time())),
                **({"bundle": bundle} if bundle is not None else {}),
            },
        )
        pipe.set(token_key, device_id)
        pipe.execute()
        return device_id, []

    def register_many(
        self,
        app: str,
        platform: str,
        tokens: Sequence[str],
        interests: Sequence[str] = (),
        chunk: int = 2000,
    ) -> list[str]:
        """Register many tokens with the same interests, pipelined ``chunk`` at a time (imports,
        benchmarks); return their device ids in order.

        A token already registered keeps its device (which is given ``interests`` too), like
        :meth:`register`. Unlike it, a chunk is not one transaction: two concurrent
        registrations of the same new token could both make a device. Interest names are not
        checked here (callers validate them, as the device API does).
        """
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}")
        out: list[str] = []
        created = str(int(time.time()))
        for start in range(0, len(tokens), chunk):
            part = tokens[start : start + chunk]
            known = self.r.mget([self.keys.token(app, platform, t) for t in part])
            pipe = self.r.pipeline(transaction=False)
            for token, existing in zip(part, known, strict=True):
                device_id = _s(existing) or f"{platform}-{uuid.uuid4()}"
                if existing is None:
                    pipe.hset(
                        self.keys.device(app, device_id),
                        mapping={
                            "platform": platform,
                            "token": token,
                            "metadata": "{}",
                            "created": created,
                        },
                    )
                    pipe.set(self.keys.token(app, platform, token), device_id)
                if interests:
                    pipe.sadd(self.keys.device_interests(app, device_id), *interests)
                out.append(device_id)
            for interest in interests:
                pipe.sadd(self.keys.interest(app, interest), *out[start:])
            pipe.execute()
        return out

    def get(self, app: str, device_id: str) -> Device | None:
        raw = self.r.hgetall(self.keys.device(app, device_id))
        if not raw:
            return None
        row = {_s(k): _s(v) for k, v in raw.items()}
        try:
            metadata = json.loads(row.get("metadata") or "{}")
        except ValueError:
            metadata = {}
        return Device(
            id=device_id,
            platform=row.get("platform") or "",
            token=row.get("token") or "",
            user_id=row.get("user") or None,
            metadata=metadata,
        )

    def get_many(self, app: str, device_ids: Sequence[str]) -> list[Device]:
        """The devices among ``device_ids`` that still exist (one command: a pipeline of one
        HMGET per device costs the push worker more CPU than the sends)."""
        if not device_ids:
            return []
        rows = self._get_many(keys=[self.keys.device(app, d) for d in device_ids])
        out = []
        for device_id, (platform, token, user) in zip(device_ids, rows, strict=True):
            if platform is not None and token is not None:
                out.append(Device(device_id, _s(platform), _s(token), _s(user) or None))
        return out

    def delete(self, app: str, device_id: str, only_token: str | None = None) -> bool:
        """Delete a device and every index entry; return whether it existed.

        With ``only_token`` the device is deleted only if it still has that token: a token that
        the app refreshed meanwhile (``PUT …/token``) is not removed for the old one's death.
        """
        dkey = self.keys.device(app, device_id)
        ikey = self.keys.device_interests(app, device_id)
        existed = False

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal existed
            platform, token, user = (_s(v) for v in pipe.hmget(dkey, "platform", "token", "user"))
            existed = platform is not None
            if not existed or (only_token is not None and token != only_token):
                existed = False
                pipe.multi()
                return
            interests = [_s(i) for i in pipe.smembers(ikey)]
            token_key = self.keys.token(app, platform, token or "")
            owner = _s(pipe.get(token_key))
            pipe.multi()
            for interest in interests:
                pipe.srem(self.keys.interest(app, interest), device_id)
            if user:
                pipe.srem(self.keys.user(app, user), device_id)
            if owner == device_id:
                pipe.delete(token_key)
            pipe.delete(dkey, ikey)

        self.r.transaction(txn, dkey, ikey)
        return existed

    def set_metadata(self, app: str, device_id: str, metadata: dict[str, Any]) -> bool:
        dkey = self.keys.device(app, device_id)
        if not self.r.exists(dkey):
            return False
        self.r.hset(dkey, "metadata", json.dumps(metadata))
        return True

    def update_token(self, app: str, device_id: str, token: str) -> bool:
        dkey = self.keys.device(app, device_id)
        ok = False

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal ok
            platform, old = (_s(v) for v in pipe.hmget(dkey, "platform", "token"))
            ok = platform is not None
            pipe.multi()
            if not ok:
                return
            if old and old != token:
                pipe.delete(self.keys.token(app, platform, old))
            pipe.hset(dkey, "token", token)
            pipe.set(self.keys.token(app, platform, token), device_id)

        self.r.transaction(txn, dkey)
        return ok

    # ------------------------------------------------------------------ interests

    def interests(self, app: str, device_id: str) -> list[str]:
        return sorted(_s(i) for i in self.r.smembers(self.keys.device_interests(app, device_id)))

    def interests_page(
        self, app: str, device_id: str, limit: int, cursor: str | None
    ) -> tuple[list[str], str | None]:
        """Interests in name order after ``cursor`` (the last name of the previous page)."""
        names = self.interests(app, device_id)
        if cursor:
            names = [n for n in names if n > cursor]
        page = names[:limit]
        return page, (page[-1] if len(names) > limit else None)

    def set_interests(self, app: str, device_id: str, interests: Iterable[str]) -> bool:
        """Replace the device's interests; False if the device does not exist."""
        new = set(interests)
        dkey = self.keys.device(app, device_id)
        ikey = self.keys.device_interests(app, device_id)
        ok = False

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal ok
            ok = bool(pipe.exists(dkey))
            old = {_s(i) for i in pipe.smembers(ikey)} if ok else set()
            pipe.multi()
            if not ok:
                return
            for interest in old - new:
                pipe.srem(self.keys.interest(app, interest), device_id)
            for interest in new - old:
                pipe.sadd(self.keys.interest(app, interest), device_id)
            pipe.delete(ikey)
            if new:
                pipe.sadd(ikey, *new)

        self.r.transaction(txn, dkey, ikey)
        return ok

    def add_interest(self, app: str, device_id: str, interest: str) -> str:
        """Add one interest: ``"ok"``, ``"missing"`` (no device) or ``"full"`` (5,000 already)."""
        dkey = self.keys.device(app, device_id)
        ikey = self.keys.device_interests(app, device_id)
        result = "ok"

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal result
            result = "ok"
            if not pipe.exists(dkey):
                result = "missing"
            elif (
                not pipe.sismember(ikey, interest) and pipe.scard(ikey) >= MAX_INTERESTS_PER_DEVICE
            ):
                result = "full"
            pipe.multi()
            if result == "ok":
                pipe.sadd(ikey, interest)
                pipe.sadd(self.keys.interest(app, interest), device_id)

        self.r.transaction(txn, dkey, ikey)
        return result

    def remove_interest(self, app: str, device_id: str, interest: str) -> bool:
        dkey = self.keys.device(app, device_id)
        if not self.r.exists(dkey):
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.srem(self.keys.device_interests(app, device_id), interest)
        pipe.srem(self.keys.interest(app, interest), device_id)
        pipe.execute()
        return True

    def scan_interest(
        self, app: str, interest: str, cursor: int, count: int
    ) -> tuple[int, list[str]]:
        """One SSCAN step over the interest's devices: ``(next_cursor, device_ids)``.

        ``next_cursor == 0`` means the scan is complete. SSCAN may return a device twice;
        callers deduplicate (the push worker records an outcome per device).
        """
        next_cursor, ids = self.r.sscan(self.keys.interest(app, interest), cursor, count=count)
        return int(next_cursor), [_s(i) for i in ids]

    def count_interests(self, app: str, interests: Sequence[str]) -> int:
        """Devices on the interests, a device on several counted once per interest."""
        pipe = self.r.pipeline(transaction=False)
        for interest in interests:
            pipe.scard(self.keys.interest(app, interest))
        return sum(int(n) for n in pipe.execute())

    def iter_interest(self, app: str, interest: str, count: int = 500) -> Iterator[list[str]]:
        cursor = 0
        while True:
            cursor, ids = self.scan_interest(app, interest, cursor, count)
            if ids:
                yield ids
            if cursor == 0:
                return

    # ------------------------------------------------------------------ users

    def set_user(self, app: str, device_id: str, user_id: str) -> str:
        """Associate the device with ``user_id``.

        Returns ``"ok"``, ``"missing"`` (no device), ``"conflict"`` (another user has it) or
        ``"full"`` (the user has 100 devices on this platform already).
        """
        dkey = self.keys.device(app, device_id)
        ukey = self.keys.user(app, user_id)
        result = "ok"

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal result
            result = "ok"
            platform, current = (_s(v) for v in pipe.hmget(dkey, "platform", "user"))
            if platform is None:
                result = "missing"
            elif current and current != user_id:
                result = "conflict"
            elif current != user_id:
                members = [_s(m) for m in pipe.smembers(ukey)]
                same = [m for m in members if m.startswith(platform + "-")]
                if len(same) >= MAX_DEVICES_PER_USER_PER_PLATFORM:
                    result = "full"
            pipe.multi()
            if result == "ok":
                pipe.hset(dkey, "user", user_id)
                pipe.sadd(ukey, device_id)

        self.r.transaction(txn, dkey, ukey)
        return result

    def user_devices(self, app: str, user_id: str) -> list[str]:
        return sorted(_s(d) for d in self.r.smembers(self.keys.user(app, user_id)))

    def users_devices(self, app: str, user_ids: Sequence[str]) -> list[str]:
        """Device ids of several users (one round trip; users have at most 200 devices)."""
        pipe = self.r.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.smembers(self.keys.user(app, user_id))
        out: list[str] = []
        for members in pipe.execute():
            out.extend(sorted(_s(m) for m in members))
        return out

    def delete_user(self, app: str, user_id: str) -> int:
        """Delete the user and every device associated with them; return how many devices."""
        count = 0
        for device_id in self.user_devices(app, user_id):
            count += self.delete(app, device_id)
        self.r.delete(self.keys.user(app, user_id))
        return count
