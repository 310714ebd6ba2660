"""Delivering one Beams publish: expand targets to devices page by page, send, record.

One task run (:func:`run_publish`) works for at most ``push.task_time_budget`` seconds:

1. it takes the publish's lease (so two runs never work on one publish at once) and checks its
   ``step`` (a redelivered run of an earlier step finds a later step recorded and stops);
2. it sends the retries that are due (``P bpr`` zset);
3. it continues expanding the targets from the saved position: an SSCAN page of an interest's
   devices, or a group of users' devices; each page's devices with no outcome yet are sent
   in concurrent batches, and each outcome is recorded as it arrives;
4. it then either finishes the publish (targets exhausted, no retry pending) or enqueues the
   next step: at once if targets remain, else when the earliest retry is due.

At most once per device under redelivery: the expansion position is saved after each page,
and each batch (at most the platform's send concurrency) is marked ``sending`` in Redis before
it goes to the provider. A device with a recorded outcome or marked ``sending`` is never sent
to again in that publish: a run that takes over records the ``sending`` ones (whose run died
before the answer was written) as ``unknown``, counted in the publish status, so the status
says how many deliveries are in doubt. A device appears once per publish even if it matches
several interests. A retry the code scheduled itself (429/503, timeout) is a new, explicit
attempt and is sent again.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

from config.settings import AppSettings, Settings
from gateway.state.devices import Device, DeviceStore
from gateway.state.publishes import (
    DELIVERED,
    FAILED,
    REMOVED,
    SENDING,
    UNKNOWN,
    WAITING,
    Publish,
    PublishStore,
)
from workers.providers import CredentialsError, sender_for
from workers.providers import base as outcome

log = logging.getLogger("clarion.push")

MAX_NEXT_STEP_DELAY = 30.0
FLUSH_EVERY = 200
FLUSH_AFTER = 0.02

Enqueue = Callable[[int, float], None]


def lease_seconds(settings: Settings) -> float:
    """How long a run's lease lasts without renewal (renewed every second while it works), so
    a run whose worker died holds the publish up for no longer than this."""
    return 3 * settings.push.send_timeout + 2


def backoff_delay(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter after ``attempts`` sends, at least ``Retry-After``."""
    push = settings.push
    delay = min(push.retry_max_delay, push.retry_base_delay * (2 ** max(0, attempts - 1)))
    delay *= random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, push.max_retry_after))
    return delay


class _Run:
    def __init__(
        self,
        settings: Settings,
        app: AppSettings,
        client: redis.Redis,
        publish: Publish,
        lease: str = "",
    ) -> None:
        self.settings = settings
        self.lease = lease
        self._renewed_at = time.monotonic()
        self.app = app
        self.pub = publish
        self.store = PublishStore(client, settings.redis.key_prefix, settings.push.status_ttl)
        self.devices = DeviceStore(client, settings.redis.key_prefix)
        self.platforms = [p for p in ("fcm", "apns") if isinstance(publish.payload.get(p), dict)]
        self._fcm_message: dict[str, Any] | None = None  # the same for every FCM device

    # ------------------------------------------------------------------ expansion

    def expand(self, deadline: float) -> bool:
        """Work through the targets until done (True) or out of time (False)."""
        pub, push = self.pub, self.settings.push
        users_per_page = max(1, push.page_size // 20)
        while pub.target_index < len(pub.targets):
            if time.monotonic() >= deadline:
                return False
            if pub.kind == "interests":
                interest = pub.targets[pub.target_index]
                cursor, ids = self.devices.scan_interest(
                    pub.app_id, interest, pub.cursor, push.page_size
                )
                self.deliver(ids, fresh=True)
                if cursor == 0:
                    pub.target_index, pub.cursor = pub.target_index + 1, 0
                else:
                    pub.cursor = cursor
            else:
                users = pub.targets[pub.target_index : pub.target_index + users_per_page]
                self.deliver(self.devices.users_devices(pub.app_id, users), fresh=True)
                pub.target_index += len(users)
            self.store.save_position(pub.app_id, pub.publish_id, pub.target_index, pub.cursor)
            self.keep_lease()
        return True

    def keep_lease(self) -> None:
        """Renew the lease about once a second while sends are in flight."""
        if not self.lease or time.monotonic() - self._renewed_at < 1.0:
            return
        self._renewed_at = time.monotonic()
        if not self.store.renew_lease(
            self.pub.app_id, self.pub.publish_id, self.lease, lease_seconds(self.settings)
        ):
            log.warning("publish %s: lease lost while sending", self.pub.publish_id)

    def retry_due(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            ids = self.store.due_retries(
                self.pub.app_id, self.pub.publish_id, self.settings.push.page_size
            )
            if not ids:
                return
            self.deliver(ids, fresh=False)

    # ------------------------------------------------------------------ sending

    def deliver(self, device_ids: Sequence[str], fresh: bool) -> None:
        app_id, pid = self.pub.app_id, self.pub.publish_id
        device_ids = list(dict.fromkeys(device_ids))
        if not device_ids:
            return
        found = self.devices.get_many(app_id, device_ids)
        targeted = [d for d in found if d.platform in self.platforms]
        if fresh:
            claimed, lost = self.store.claim(app_id, pid, [d.id for d in targeted])
            keep = set(claimed)
            targeted = [d for d in targeted if d.id in keep]
        else:
            # A due retry still marked SENDING was being sent by a run that died: in doubt.
            states = dict(zip(device_ids, self.store.states(app_id, pid, device_ids), strict=True))
            lost = [d for d in device_ids if states[d] == SENDING]
            # Retries whose device was deleted meanwhile (user deleted, token refreshed away).
            found_ids = {d.id for d in found}
            gone = [d for d in device_ids if d not in found_ids and states[d] != SENDING]
            self.store.record(app_id, pid, [(d, FAILED, None) for d in gone])
            targeted = [d for d in targeted if states.get(d.id) == WAITING]
        if lost:
            log.warning(
                "publish %s: %d device(s) were being sent when their worker was lost; "
                "not sent again, counted unknown",
                pid,
                len(lost),
            )
            self.store.record(app_id, pid, [(d, UNKNOWN, None) for d in lost])
        for platform in self.platforms:
            group = [d for d in targeted if d.platform == platform]
            if group:
                self._send_group(platform, group)

    def _send_group(self, platform: str, group: list[Device]) -> None:
        app_id, pid = self.pub.app_id, self.pub.publish_id
        if platform in self.pub.errors:
            self.store.record(app_id, pid, [(d.id, FAILED, None) for d in group])
            return
        try:
            sender = sender_for(platform, self.app, self.settings.push)
        except CredentialsError as exc:
            self._stop_platform(platform, str(exc))
            self.store.record(app_id, pid, [(d.id, FAILED, None) for d in group])
            return
        ids = [d.id for d in group]
        attempts = dict(zip(ids, self.store.attempts(app_id, pid, ids), strict=True))
        # Batches of the provider's concurrency: what is marked SENDING is what is in flight,
        # so a worker killed mid-send leaves at most that many devices in doubt.
        size = max(1, getattr(self.settings.push, f"{platform}_concurrency", len(group)))
        for start in range(0, len(group), size):
            self._send_batch(platform, sender, group[start : start + size], attempts)

    def _send_batch(
        self, platform: str, sender: Any, group: list[Device], attempts: dict[str, int]
    ) -> None:
        app_id, pid = self.pub.app_id, self.pub.publish_id
        by_id = {d.id: d for d in group}
        items = [(d.id, d.token, self._message(platform, d)) for d in group]
        self.store.mark_sending(app_id, pid, [d.id for d in group])
        rows: list[tuple[str, str, float | None]] = []
        answered: set[str] = set()  # across flushes: an answered device is never rescheduled
        first_at = 0.0
        try:
            for item in sender.send(items):
                self.keep_lease()
                if item is not None:
                    device_id, result = item
                    if not rows:
                        first_at = time.monotonic()
                    answered.add(device_id)
                    rows.append(self._outcome(platform, by_id[device_id], result, attempts))
                # Written as they come: at most FLUSH_AFTER seconds or FLUSH_EVERY rows late.
                if rows and (
                    item is None
                    or len(rows) >= FLUSH_EVERY
                    or time.monotonic() - first_at >= FLUSH_AFTER
                ):
                    self.store.record(app_id, pid, rows)
                    rows = []
        except Exception:  # noqa: BLE001 - whatever was not answered is retried
            log.exception("push batch failed on %s", platform)
            now = time.time()
            rows.extend(
                (d.id, WAITING, now + backoff_delay(self.settings, attempts[d.id] + 1, None))
                for d in group
                if d.id not in answered
            )
        self.store.record(app_id, pid, rows)

    def _message(self, platform: str, device: Device) -> Any:
        payload = self.pub.payload[platform]
        if platform == "fcm":
            from workers.providers.fcm import build_message

            if self._fcm_message is None:
                self._fcm_message = build_message(payload, self.pub.app_id, self.pub.publish_id)
            return self._fcm_message
        from workers.providers.apns import build_request

        return build_request(payload, self.pub.publish_id, device.token)

    def _outcome(
        self, platform: str, device: Device, result: Any, attempts: dict[str, int]
    ) -> tuple[str, str, float | None]:
        if result.outcome == outcome.DELIVERED:
            return device.id, DELIVERED, None
        if result.outcome == outcome.DEAD:
            self.devices.delete(self.pub.app_id, device.id, only_token=device.token)
            log.info("removed device %s: %s", device.id, result.detail)
            return device.id, REMOVED, None
        if result.outcome == outcome.AUTH:
            self._stop_platform(platform, result.detail)
            return device.id, FAILED, None
        if result.outcome == outcome.RETRY:
            made = attempts.get(device.id, 0) + 1
            if made < self.settings.push.max_attempts:
                delay = backoff_delay(self.settings, made, result.retry_after)
                return device.id, WAITING, time.time() + delay
            log.warning(
                "giving up on device %s after %d attempts: %s", device.id, made, result.detail
            )
            return device.id, FAILED, None
        log.warning("push to device %s failed: %s", device.id, result.detail)
        return device.id, FAILED, None

    def _stop_platform(self, platform: str, description: str) -> None:
        if platform not in self.pub.errors:
            log.error(
                "publish %s: %s credentials refused: %s", self.pub.publish_id, platform, description
            )
            self.pub.errors = self.store.set_error(
                self.pub.app_id, self.pub.publish_id, platform, description
            )


def run_publish(
    settings: Settings,
    client: redis.Redis,
    app_id: str,
    publish_id: str,
    step: int,
    enqueue: Enqueue,
    apps: Any = None,
) -> str:
    """One task run for a publish; returns what it did (for logs and tests). ``apps`` is the
    worker's app resolver (gateway/state/apps.py), so credentials changed with ``clarion
    apps`` apply to the next run; without one, the settings' own apps."""
    store = PublishStore(client, settings.redis.key_prefix, settings.push.status_ttl)
    publish = store.load(app_id, publish_id)
    if publish is None:
        return "missing"
    if publish.state == "done":
        return "done"
    if publish.step > step:
        return "stale"
    app = apps.find(app_id) if apps is not None else settings.app_by_id(app_id)
    if app is None or not app.enabled:
        # Disabling an app stops its pushes, those already accepted included: what it had
        # not sent is closed with the reason in its status.
        reason = "the app no longer exists" if app is None else "the app is disabled"
        store.set_error(app_id, publish_id, "app", reason)
        store.finish(app_id, publish_id)
        return "done"
    push = settings.push
    lease = uuid.uuid4().hex
    if not store.acquire_lease(app_id, publish_id, lease, lease_seconds(settings)):
        enqueue(step, 0.5)
        return "busy"
    try:
        store.begin_step(app_id, publish_id, step)
        deadline = time.monotonic() + push.task_time_budget
        run = _Run(settings, app, client, publish, lease)
        run.retry_due(deadline)
        expanded = run.expand(deadline)
        next_retry = store.next_retry_at(app_id, publish_id)
        if expanded and next_retry is None:
            store.finish(app_id, publish_id)
            return "done"
    finally:
        store.release_lease(app_id, publish_id, lease)
    if not expanded:
        delay = 0.0
    else:
        delay = min(MAX_NEXT_STEP_DELAY, max(0.05, (next_retry or 0) - time.time()))
    enqueue(step + 1, delay)
    return "continued"
