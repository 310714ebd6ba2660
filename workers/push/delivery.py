"""Delivering one Beams publish: expand targets to devices page by page, send, record.

One task run (:func:`run_publish`) works for at most ``push.task_time_budget`` seconds:

1. it takes the publish's lease (so two runs never work on one publish at once) and checks its
   ``step`` (a redelivered run of an earlier step finds a later step recorded and stops);
2. it sends the retries that are due (``P bpr`` zset);
3. it continues expanding the targets from the saved position: an SSCAN page of an interest's
   devices, or a group of users' devices;
4. it then either finishes the publish (targets exhausted, no retry pending) or enqueues the
   next step: at once if targets remain, else when the earliest retry is due.

Sending is a sliding window per platform, not batches: each device is its own send on the
worker process's provider loop (workers/providers/loop.py), at most ``push.{platform}_
concurrency`` in flight, and a send that ends frees its slot at once. So a provider that hangs
on one token holds that token's slot until ``send_timeout``, never the other devices of its
page nor the other platform; the run itself waits for it only at its very end.

At most once per device under redelivery: the expansion position of a page is saved once every
device of the page has gone into the window, and devices are marked ``sending`` in Redis (one
write per handful) just before they go to the provider; a slot is freed only when the device's
outcome is written. A device with a recorded outcome or marked ``sending`` is never sent to
again in that publish: a run that takes over records the ``sending`` ones (whose run died
before the answer was written) as ``unknown``, counted in the publish status, so the status
says how many deliveries are in doubt: at most the window (``{platform}_concurrency``) per
worker process killed. A device appears once per publish even if it matches several interests.
A retry the code scheduled itself (429/503, timeout) is a new, explicit attempt and is sent
again.

Several worker processes on one publish: a publish to interests with more than
``push.split_devices`` devices is split by its first run into parts (one per that many
devices, at most ``push.max_parts``), each a chain of task runs of its own on the ``push``
queue that any worker process takes. Part N reads every page but sends only to the devices
whose ``crc32(id) % parts == N``; it has its own lease, step, position and retries
(gateway/state/publishes.py), so all of the above holds per part, and no device is in two
parts. The publish is done when its last part is.
"""

from __future__ import annotations

import logging
import queue
import random
import time
import uuid
from collections import deque
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
    part_of,
    platform_of,
)
from workers.providers import CredentialsError, sender_for
from workers.providers import base as outcome
from workers.providers.loop import start_sends
from workers.push.live import Live

log = logging.getLogger("clarion.push")

MAX_NEXT_STEP_DELAY = 30.0
# How long the run waits for an answer while its window is full, between looks at its lease.
WAIT = 0.05
# Fewer answers than this in hand: wait BATCH_WAIT seconds for more before recording them.
BATCH = 32
BATCH_WAIT = 0.002
# Beyond send_timeout, how long the run waits for its last answers before it leaves them
# ``sending`` (counted ``unknown`` by the next run) rather than hang on a stalled loop.
STALL_GRACE = 5.0

Enqueue = Callable[[int, float], None]
StartPart = Callable[[int], None]


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
        live: Live | None = None,
    ) -> None:
        self.settings = settings
        self.live = live
        self.live_queued = False
        self.lease = lease
        self._renewed_at = time.monotonic()
        self.app = app
        self.pub = publish
        self.part, self.parts = publish.part, publish.parts
        self.store = PublishStore(client, settings.redis.key_prefix, settings.push.status_ttl)
        self.devices = DeviceStore(client, settings.redis.key_prefix)
        self.platforms = [
            p for p in ("fcm", "apns", "web") if isinstance(publish.payload.get(p), dict)
        ]
        self._messages: dict[str, Any] = {}  # FCM and web: the same for every device
        self.capacity = {p: getattr(settings.push, f"{p}_concurrency") for p in self.platforms}
        # Claimed (or due for a retry) and not yet sent: (device, fresh) per platform.
        self.ready: dict[str, deque[tuple[Device, bool]]] = {p: deque() for p in self.platforms}
        # In the window: device id -> (device, attempts made before this one).
        self.flying: dict[str, tuple[Device, int]] = {}
        self.in_flight = dict.fromkeys(self.platforms, 0)
        self.answers: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.position: tuple[int, int] | None = None  # saved once the page read is all sent
        self.retry_ids: set[str] = set()  # due retries this run has taken
        self.senders: dict[str, Any] = {}

    # ------------------------------------------------------------------ the run

    def work(self, deadline: float) -> bool:
        """Due retries, then the targets, until done (True) or out of time (False); returns
        once every send it started has been answered (or given up on)."""
        retries_left = True
        while True:
            self.pump(WAIT if self._queued() else 0.0)
            if self._queued():
                continue
            if time.monotonic() >= deadline:
                break
            if retries_left:
                retries_left = self._take_due_retries()
            elif self._targets_left():
                self._read_page()
            elif self._live_due():
                self.live_queued = True
                users = self.live.resolve()  # type: ignore[union-attr]
                self._queue(self.devices.users_devices(self.pub.app_id, users), fresh=True)
            else:
                break
        self._wait_for_answers()
        return not self._targets_left()

    def pump(self, wait: float) -> None:
        """Fill the windows, record the answers that came (waiting up to ``wait`` seconds for
        the first), fill again, save the position once the page read is all sent."""
        self._dispatch()
        if self._collect(wait):
            self._dispatch()
        if self.position is not None and not self._queued():
            self.store.save_position(self.pub.app_id, self.pub.publish_id, *self.position,
                                     part=self.part)
            self.position = None
        self.keep_lease()

    def _live_due(self) -> bool:
        """The live users' check is due and not yet made by this run."""
        if self.live is None or self.live_queued:
            return False
        check_at = self.live.check_at()
        return check_at is None or check_at <= time.time()

    def _queued(self) -> bool:
        return any(self.ready.values())

    def _targets_left(self) -> bool:
        return self.pub.target_index < len(self.pub.targets)

    def _wait_for_answers(self) -> None:
        last_answer = time.monotonic()
        limit = self.settings.push.send_timeout + STALL_GRACE
        while self.flying:
            if self._collect(WAIT):
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer > limit:
                log.error("publish %s: %d send(s) never answered; left in doubt",
                          self.pub.publish_id, len(self.flying))
                return
            self.keep_lease()

    def keep_lease(self) -> None:
        """Renew the lease about once a second while sends are in flight."""
        if not self.lease or time.monotonic() - self._renewed_at < 1.0:
            return
        self._renewed_at = time.monotonic()
        if not self.store.renew_lease(
            self.pub.app_id, self.pub.publish_id, self.lease, lease_seconds(self.settings),
            part=self.part,
        ):
            log.warning("publish %s: lease lost while sending", self.pub.publish_id)

    # ------------------------------------------------------------------ what to send

    def _read_page(self) -> None:
        pub, push = self.pub, self.settings.push
        if pub.kind == "interests":
            interest = pub.targets[pub.target_index]
            cursor, ids = self.devices.scan_interest(
                pub.app_id, interest, pub.cursor, push.page_size * self.parts
            )
            if self.parts > 1:
                ids = [i for i in ids if part_of(i, self.parts) == self.part]
            self._queue(ids, fresh=True)
            if cursor == 0:
                pub.target_index, pub.cursor = pub.target_index + 1, 0
            else:
                pub.cursor = cursor
        else:
            users = pub.targets[pub.target_index : pub.target_index + max(1, push.page_size // 20)]
            pub.target_index += len(users)
            if self.live is not None:
                users = self.live.push_now(users)  # the live users are checked later
            self._queue(self.devices.users_devices(pub.app_id, users), fresh=True)
        self.position = (pub.target_index, pub.cursor)

    def _take_due_retries(self) -> bool:
        """Queue the due retries this run has not taken yet; False when there are none."""
        taken = self.retry_ids
        due = self.store.due_retries(
            self.pub.app_id, self.pub.publish_id, self.settings.push.page_size + len(taken),
            part=self.part,
        )
        ids = [d for d in due if d not in taken]
        if not ids:
            return False
        taken.update(ids)
        self._queue(ids, fresh=False)
        return True

    def _queue(self, device_ids: Sequence[str], fresh: bool) -> None:
        app_id, pid = self.pub.app_id, self.pub.publish_id
        device_ids = list(dict.fromkeys(device_ids))
        if not device_ids:
            return
        found = self.devices.get_many(app_id, device_ids)
        targeted = [d for d in found if d.platform in self.platforms]
        if fresh:
            claimed, lost = self.store.claim(app_id, pid, [d.id for d in targeted])
            # Marked SENDING by this run (a retry of it, or a device of an earlier page still
            # in flight): its answer is coming, it is not a dead run's.
            lost = [d for d in lost if d not in self.flying and d not in self.retry_ids]
            keep = set(claimed)
            targeted = [d for d in targeted if d.id in keep]
        else:
            # A due retry still marked SENDING was being sent by a run that died: in doubt.
            states = dict(zip(device_ids, self.store.states(app_id, pid, device_ids), strict=True))
            lost = [d for d in device_ids if states[d] == SENDING]
            # Retries whose device was deleted meanwhile (user deleted, token refreshed away).
            found_ids = {d.id for d in found}
            gone = [d for d in device_ids if d not in found_ids and states[d] != SENDING]
            self.store.record(app_id, pid, [(d, FAILED, None) for d in gone], self.part)
            targeted = [d for d in targeted if states.get(d.id) == WAITING]
        if lost:
            log.warning(
                "publish %s: %d device(s) were being sent when their worker was lost; "
                "not sent again, counted unknown",
                pid,
                len(lost),
            )
            self.store.record(app_id, pid, [(d, UNKNOWN, None) for d in lost], self.part)
        for device in targeted:
            self.ready[device.platform].append((device, fresh))

    # ------------------------------------------------------------------ the window

    def _dispatch(self) -> None:
        for platform in self.platforms:
            ready = self.ready[platform]
            room = self.capacity[platform] - self.in_flight[platform]
            if ready and room > 0:
                self._send_some(platform, [ready.popleft() for _ in range(min(room, len(ready)))])

    def _send_some(self, platform: str, group: list[tuple[Device, bool]]) -> None:
        app_id, pid = self.pub.app_id, self.pub.publish_id
        sender = self._sender(platform)
        if sender is None:
            self.store.record(app_id, pid, [(d.id, FAILED, None) for d, _ in group], self.part)
            return
        retried = [d.id for d, fresh in group if not fresh]
        attempts = dict(zip(retried, self.store.attempts(app_id, pid, retried), strict=True))
        # Marked before they go: a run that takes over never sends these again.
        self.store.mark_sending(app_id, pid, [d.id for d, _ in group])
        items = []
        for device, _ in group:
            self.flying[device.id] = (device, attempts.get(device.id, 0))
            items.append((device.id, device.token, self._message(platform, device)))
        self.in_flight[platform] += len(items)
        start_sends(sender.loop, sender.send_one, items, self.answers)

    def _sender(self, platform: str) -> Any:
        """The platform's sender, or None once its credentials are missing or refused."""
        if platform in self.pub.errors:
            return None
        if platform not in self.senders:
            try:
                self.senders[platform] = sender_for(platform, self.app, self.settings.push)
            except CredentialsError as exc:
                self._stop_platform(platform, str(exc))
                return None
        return self.senders[platform]

    def _collect(self, wait: float) -> bool:
        """Record every answer that came (waiting up to ``wait`` for one); False if none."""
        try:
            first = self.answers.get(timeout=wait) if wait > 0 else self.answers.get_nowait()
        except queue.Empty:
            return False
        answers = [first]
        self._drain(answers)
        if len(answers) < BATCH and len(self.flying) > len(answers):
            # A few answers: wait a moment for more, so one Redis write (whose fixed cost is
            # most of its cost at a few rows) records many.
            time.sleep(BATCH_WAIT)
            self._drain(answers)
        rows = []
        for device_id, result in answers:
            device, attempts = self.flying.pop(device_id)
            rows.append(self._outcome(device, result, attempts))
        # Slots free only once the outcomes are written: what is marked SENDING and not yet
        # recorded never exceeds the window.
        self.store.record(self.pub.app_id, self.pub.publish_id, rows, self.part)
        for device_id, _ in answers:
            self.in_flight[platform_of(device_id)] -= 1
        return True

    def _drain(self, answers: list[tuple[str, Any]]) -> None:
        while True:
            try:
                answers.append(self.answers.get_nowait())
            except queue.Empty:
                return

    def _message(self, platform: str, device: Device) -> Any:
        payload = self.pub.payload[platform]
        if platform not in self._messages:
            if platform == "apns":
                from workers.providers.apns import build_message as apns_message

                self._messages[platform] = apns_message(payload, self.pub.publish_id)
            else:
                if platform == "fcm":
                    from workers.providers.fcm import build_message
                else:
                    from workers.providers.webpush import build_message
                message = build_message(payload, self.pub.app_id, self.pub.publish_id)
                if platform == "fcm":  # the request body itself, built once by pyfcm
                    message = self.senders["fcm"].prepare(message)
                self._messages[platform] = message
        if platform == "apns":  # the body is shared, the request carries the token
            from workers.providers.apns import request_for

            return request_for(self._messages[platform], device.token)
        return self._messages[platform]

    def _outcome(
        self, device: Device, result: Any, attempts: int
    ) -> tuple[str, str, float | None]:
        if result.outcome == outcome.DELIVERED:
            return device.id, DELIVERED, None
        if result.outcome == outcome.DEAD:
            self.devices.delete(self.pub.app_id, device.id, only_token=device.token)
            log.info("removed device %s: %s", device.id, result.detail)
            return device.id, REMOVED, None
        if result.outcome == outcome.AUTH:
            self._stop_platform(device.platform, result.detail)
            return device.id, FAILED, None
        if result.outcome == outcome.RETRY:
            made = attempts + 1
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
    send_task: Any = None,
    part: int = 0,
    start_part: StartPart | None = None,
) -> str:
    """One task run for a publish's ``part``; returns what it did (for logs and tests).
    ``apps`` is the worker's app resolver (gateway/state/apps.py), so credentials changed with
    ``clarion apps`` apply to the next run; without one, the settings' own apps.
    ``start_part(n)`` enqueues the first step of part ``n``: without it, the publish is never
    split."""
    store = PublishStore(client, settings.redis.key_prefix, settings.push.status_ttl)
    publish = store.load(app_id, publish_id, part)
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
    if not store.acquire_lease(app_id, publish_id, lease, lease_seconds(settings), part):
        enqueue(step, 0.5)
        return "busy"
    try:
        if part == 0 and step == 0 and start_part is not None:
            _split(settings, client, store, publish, start_part)
        store.begin_step(app_id, publish_id, step, part)
        deadline = time.monotonic() + push.task_time_budget
        live = None
        if Live.wanted(publish) and send_task is not None:
            live = Live(settings, client, store, publish, app, send_task)
            live.start()
        expanded = _Run(settings, app, client, publish, lease, live).work(deadline)
        next_retry = store.next_retry_at(app_id, publish_id, part)
        live_check = live.check_at() if live is not None else None
        if live_check is not None:
            next_retry = min(next_retry or live_check, live_check)
        if expanded and next_retry is None:
            store.finish_part(app_id, publish_id, part, publish.parts)
            return "done"
    finally:
        store.release_lease(app_id, publish_id, lease, part)
    if not expanded:
        delay = 0.0
    else:
        delay = min(MAX_NEXT_STEP_DELAY, max(0.05, (next_retry or 0) - time.time()))
    enqueue(step + 1, delay)
    return "continued"


def _split(
    settings: Settings,
    client: redis.Redis,
    store: PublishStore,
    publish: Publish,
    start_part: StartPart,
) -> None:
    """On the first run of a publish: split it into parts if it targets more than
    ``push.split_devices`` devices, and enqueue parts 1… (again on a redelivered first run: a
    part's duplicate first step finds its step taken and stops)."""
    push = settings.push
    if publish.kind != "interests" or not push.split_devices or push.max_parts < 2:
        return
    devices = DeviceStore(client, settings.redis.key_prefix)
    total = devices.count_interests(publish.app_id, publish.targets)
    wanted = min(push.max_parts, max(1, -(-total // push.split_devices)))
    publish.parts = store.split(publish.app_id, publish.publish_id, wanted)
    for part in range(1, publish.parts):
        start_part(part)
