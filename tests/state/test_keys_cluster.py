"""The key schema on Redis Cluster: every key of an app is in the app's hash slot, so each
script and transaction (which only ever name one app's keys) runs on one master; keys are
unchanged without Cluster (deployments upgrading keep their data)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from config.settings import AppSettings
from gateway.state.apps import AppStore
from gateway.state.devices import DeviceKeys
from gateway.state.keys import Keys, KeySpace
from gateway.state.publishes import PublishKeys

# App ids as the settings allow them on Cluster (no braces); other parts as Pusher's names.
APP_IDS = st.text(st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)),
                  min_size=1, max_size=64)
NAMES = st.from_regex(r"[A-Za-z0-9_\-=@,.;]{1,40}", fullmatch=True)


def _app_keys(space: KeySpace) -> Iterator[tuple[str, Callable[..., str]]]:
    """Every key method of ``space`` whose first parameter is an app id."""
    for name, method in inspect.getmembers(space, inspect.ismethod):
        params = list(inspect.signature(method).parameters)
        if params and params[0] in ("app_id", "app") and name != "app":
            yield name, method


def _call(name: str, method: Callable[..., str], app_id: str, other: str) -> str:
    params = list(inspect.signature(method).parameters.values())[1:]
    args = [1 if p.annotation in (int, "int") else other for p in params
            if p.default is inspect.Parameter.empty]
    return method(app_id, *args)


def _spaces(cluster: bool) -> list[KeySpace]:
    return [Keys("clarion:", cluster), DeviceKeys("clarion:", cluster),
            PublishKeys("clarion:", cluster)]


def test_every_app_key_method_is_found() -> None:
    names = {n for space in _spaces(True) for n, _ in _app_keys(space)}
    assert {"history", "serial", "presence_members", "connections", "users_online",
            "live_armed_of", "device", "publish", "idempotency", "wh_index"} <= names


@given(APP_IDS, NAMES)
def test_on_cluster_every_key_of_an_app_is_in_its_slot(app_id: str, other: str) -> None:
    slot = key_slot(("{" + app_id + "}").encode())
    for space in _spaces(True):
        for name, method in _app_keys(space):
            key = _call(name, method, app_id, other)
            assert key_slot(key.encode()) == slot, (name, key)
    keys = Keys("clarion:", True)
    # The node's rows of an app are kept in the app's slot too.
    assert key_slot(keys.node_presence("node-1", app_id).encode()) == slot
    assert key_slot(keys.node_users("node-1", app_id).encode()) == slot


@given(APP_IDS, NAMES)
def test_without_cluster_keys_are_as_before(app_id: str, other: str) -> None:
    keys = Keys("p:")
    assert keys.history(app_id, other) == f"p:h:{app_id}:{other}"
    assert keys.live_armed_of(app_id) == "p:lv:armed"
    assert keys.node_presence("n") == "p:np:n"
    assert keys.node_users("n") == "p:nu:n"
    assert DeviceKeys("p:").device(app_id, other) == f"p:bd:{app_id}:{other}"
    for space in _spaces(False):
        for name, method in _app_keys(space):
            assert "{" not in _call(name, method, app_id, other), name


def test_the_app_store_refuses_an_id_with_a_brace_on_cluster(redis_client, key_prefix) -> None:
    """`clarion apps add` on a cluster: an id with a brace would break its keys' hash tag."""
    app = AppSettings(id="a{b", key="k", secret="s")
    with pytest.raises(ValueError, match="hash tag"):
        AppStore(redis_client, Keys(key_prefix, cluster=True)).put(app)
    AppStore(redis_client, Keys(key_prefix)).put(app)  # fine on one Redis
    assert redis_client.hexists(Keys(key_prefix).apps, "a{b")
