"""The deliver-live-else-push decision under the races of workers/push/live.py, driven step by
step: the worker's own ``run_publish`` on real Redis, the real FCM emulator, Celery's real
``send_task`` (the live event is queued on the broker), and sign-ins and sign-outs made by the
WebSocket node's own ``SignedInUsers`` (its Lua scripts), as a node would make them."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio
from beams_harness import APP_ID

from gateway.state.devices import DeviceStore
from gateway.state.keys import Keys
from gateway.state.publishes import PublishStore
from gateway.state.users import SignedInUsers
from workers.celery_app import create_celery
from workers.push.delivery import run_publish

FCM = {"fcm": {"notification": {"title": "t"}}}
LIVE = {"event": "notice", "data": {"n": 1}}


def node_does(settings, node_id: str, *changes: tuple[str, str]) -> None:
    """Sign users in or out (``("in", user)``/``("out", user)``) as node ``node_id``."""
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(settings.redis.url)
        users = SignedInUsers(client, Keys(settings.redis.key_prefix), node_id)
        for what, user in changes:
            await (users.sign_in if what == "in" else users.sign_out)(APP_ID, user)
        await client.aclose()

    asyncio.run(run())


def sweep(settings, node_id: str) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(settings.redis.url)
        await SignedInUsers(client, Keys(settings.redis.key_prefix), "survivor").sweep_node(
            node_id)
        await client.aclose()

    asyncio.run(run())


def wait_for_check(r, store: PublishStore, pid: str) -> None:
    """Until the live users' check is due (the grace is long enough for step 0 to end first,
    however slow the machine, so the changes above land inside it)."""
    check_at = float(r.hget(store.keys.publish(APP_ID, pid), "live_check"))
    assert check_at > time.time(), "the grace ran out before the test could act in it"
    time.sleep(check_at - time.time() + 0.05)


def test_each_race_ends_live_or_pushed(r, push_settings, fcm_emu):
    settings = push_settings.with_overrides(push={"live_grace": 3.0})
    prefix = settings.redis.key_prefix
    tag = uuid.uuid4().hex[:6]
    names = ("stays", "offline", "out", "out_and_in", "swept", "in_late")
    users = {n: f"{n}-{tag}" for n in names}
    tokens = {}
    devices = DeviceStore(r, prefix)
    for n, user in users.items():
        tokens[n] = f"fcm-race-{n}-{uuid.uuid4().hex}"
        device_id, _ = devices.register(APP_ID, "fcm", tokens[n])
        devices.set_user(APP_ID, device_id, user)
    node_a, node_b = f"a-{tag}", f"b-{tag}"
    node_does(settings, node_a, ("in", users["stays"]), ("in", users["out"]),
              ("in", users["out_and_in"]))
    node_does(settings, node_b, ("in", users["swept"]), ("in", users["stays"]))

    store = PublishStore(r, prefix, settings.push.status_ttl)
    pid = f"pubid-{uuid.uuid4()}"
    store.create(APP_ID, pid, "users", list(users.values()), {**FCM, "live": LIVE})
    send_task = create_celery(settings).send_task
    steps: list[tuple[int, float]] = []

    def step(n: int) -> str:
        return run_publish(settings, r, APP_ID, pid, n, lambda s, d: steps.append((s, d)),
                           send_task=send_task)

    assert step(0) == "continued"
    # Within the grace: one signs out, one signs out and in again (a new connection that was
    # not subscribed when the event went out), a node dies and is swept, one signs in late;
    # "stays" loses the connection on node b but keeps the one on node a... which is a
    # sign-out all the same: only an unbroken run of sign-ins counts as staying.
    node_does(settings, node_a, ("out", users["out"]), ("out", users["out_and_in"]),
              ("in", users["out_and_in"]), ("in", users["in_late"]))
    sweep(settings, node_b)
    wait_for_check(r, store, pid)
    assert step(steps[-1][0]) == "done"

    status = store.status(APP_ID, pid)
    assert status["users"] == {
        users["stays"]: "live+push", users["offline"]: "push", users["out"]: "live+push",
        users["out_and_in"]: "live+push", users["swept"]: "live+push",
        users["in_late"]: "push",
    }
    assert all(len(fcm_emu.messages(tokens[n])) == 1 for n in names), {
        n: len(fcm_emu.messages(tokens[n])) for n in names}


def test_a_user_who_stays_signed_in_is_not_pushed(r, push_settings, fcm_emu):
    settings = push_settings.with_overrides(push={"live_grace": 3.0})
    user = f"steady-{uuid.uuid4().hex[:6]}"
    token = f"fcm-steady-{uuid.uuid4().hex}"
    devices = DeviceStore(r, settings.redis.key_prefix)
    device_id, _ = devices.register(APP_ID, "fcm", token)
    devices.set_user(APP_ID, device_id, user)
    node_does(settings, f"n-{user}", ("in", user))
    store = PublishStore(r, settings.redis.key_prefix, settings.push.status_ttl)
    pid = f"pubid-{uuid.uuid4()}"
    store.create(APP_ID, pid, "users", [user], {**FCM, "live": LIVE})
    steps: list[tuple[int, float]] = []
    send_task = create_celery(settings).send_task
    assert run_publish(settings, r, APP_ID, pid, 0, lambda s, d: steps.append((s, d)),
                       send_task=send_task) == "continued"
    # Another tab signs in meanwhile: no sign-out, still "stayed".
    node_does(settings, f"n-{user}", ("in", user))
    wait_for_check(r, store, pid)
    assert run_publish(settings, r, APP_ID, pid, steps[-1][0], lambda s, d: None,
                       send_task=send_task) == "done"
    assert store.status(APP_ID, pid)["users"] == {user: "live"}
    assert fcm_emu.messages(token) == []
