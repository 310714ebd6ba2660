"""Settings: TOML file, CLARION_* overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings, settings_to_env

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"


def test_defaults_without_a_file() -> None:
    s = load_settings(environ={})
    assert (s.websocket.port, s.api.port, s.redis.url, s.apps) == (6001, 6002, None, [])


def test_example_file_loads() -> None:
    s = load_settings(EXAMPLE, environ={})
    app = s.app_by_key("app-key")
    assert app is not None and app.id == "1" and app.max_event_bytes == 10240
    assert s.app_by_id("1") is app and s.app_by_id("2") is None


def test_environment_overrides_file() -> None:
    env = {"CLARION_WEBSOCKET__PORT": "7001", "CLARION_REDIS__URL": "redis://h:1/2",
           "CLARION_APPS": '[{"id": 5, "key": "k", "secret": "s"}]'}
    s = load_settings(EXAMPLE, environ=env)
    assert s.websocket.port == 7001
    assert s.redis.url == "redis://h:1/2"
    assert s.apps[0].id == "5"  # numbers become strings


def test_config_path_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[api]\nport = 7777\n')
    assert load_settings(environ={"CLARION_CONFIG": str(f)}).api.port == 7777


def test_round_trip_to_children() -> None:
    s = load_settings(EXAMPLE, environ={"CLARION_API__PORT": "7002"})
    assert load_settings(environ=settings_to_env(s)) == s


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[websocket]\nport = 70000\n", "websocket.port"),
        ("[websocket]\nprot = 1\n", "websocket.prot"),
        ("[redis]\nurl = \"http://x\"\n", "redis.url"),
        ("[[apps]]\nid = \"1\"\nkey = \"k\"\n", "apps.0.secret"),
        ("[[apps]]\nid = \"1\"\nkey = \"a:b\"\nsecret = \"s\"\n", "apps.0.key"),
        ("[[apps]]\nid='1'\nkey='a'\nsecret='s'\n[[apps]]\nid='1'\nkey='b'\nsecret='s'\n",
         "duplicate id"),
        ("[api\n", "not valid TOML"),
        ("[[worker.groups]]\nqueues = ['live', 'webhooks']\n",
         "worker.groups: no group consumes push"),
        ("[[worker.groups]]\nqueues = ['live', 'mail']\n", "worker.groups.0.queues.1"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(f, environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("/nonexistent/clarion.toml", environ={})


def test_unknown_environment_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="websocket.nope"):
        load_settings(environ={"CLARION_WEBSOCKET__NOPE": "1"})


def test_live_has_a_worker_of_its_own_by_default() -> None:
    groups = load_settings(environ={}).worker.groups
    assert [(g.queues, g.pool) for g in groups] == [(["live"], None),
                                                    (["push", "webhooks"], "threads")]


def test_worker_groups_from_the_environment() -> None:
    env = {"CLARION_WORKER__GROUPS": '[{"queues": ["live", "push", "webhooks"]}]',
           "CLARION_WORKER__CONCURRENCY": "3"}
    worker = load_settings(environ=env).worker
    (group,) = worker.groups
    assert worker.group_for(["webhooks", "live", "push"]) is group
    assert (worker.concurrency_of(group), worker.pool_of(group)) == (3, "prefork")
    assert worker.group_for(["live"]) is None
