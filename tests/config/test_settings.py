"""Settings: TOML file, CLARION_* overrides, and errors that name the key."""

from __future__ import annotations

import json
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


def _app(**extra: object) -> dict[str, object]:
    return {"id": "1", "key": "k", "secret": "s", **extra}


def test_apps_may_set_their_own_log_limits_and_idempotency_window(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[history]\nretention = 600\nmax_events = 5000\n[api]\nidempotency_window = 60\n"
                 "[[apps]]\nid = 1\nkey = 'a'\nsecret = 's'\nidempotency_window = 900\n"
                 "[apps.history]\nmax_events = 50\n"
                 "[[apps]]\nid = 2\nkey = 'b'\nsecret = 's'\n")
    s = load_settings(f, environ={})
    own, default = s.apps
    assert (s.history_of(own).max_events, s.history_of(own).retention) == (50, 600)
    assert s.history_of(default) == s.history
    assert (s.idempotency_window_of(own), s.idempotency_window_of(default)) == (900, 60)
    assert load_settings(environ={}).api.idempotency_window == 300


GE1, LE = "Input should be greater than or equal to 1", "Input should be less than or equal to"


@pytest.mark.parametrize(("app", "message"), [
    ({"history": {"retention": 0}}, f"apps.0.history.retention: {GE1}"),
    ({"history": {"retention": 7 * 86400 + 1}}, f"apps.0.history.retention: {LE} 604800"),
    ({"history": {"max_events": 0}}, f"apps.0.history.max_events: {GE1}"),
    ({"history": {"max_events": 1_000_001}}, f"apps.0.history.max_events: {LE} 1000000"),
    ({"history": {"size": 5}}, "unknown key apps.0.history.size"),
    ({"idempotency_window": 0}, f"apps.0.idempotency_window: {GE1}"),
    ({"idempotency_window": 86401}, f"apps.0.idempotency_window: {LE} 86400"),
])
def test_app_limits_are_bounded(app: dict[str, object], message: str) -> None:
    env = {"CLARION_APPS": json.dumps([_app(**app)])}
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_deployment_idempotency_window_is_bounded() -> None:
    assert load_settings(environ={"CLARION_API__IDEMPOTENCY_WINDOW": "86400"}
                         ).api.idempotency_window == 86400
    for bad, message in (("0", GE1), ("86401", f"{LE} 86400")):
        with pytest.raises(ConfigError, match=f"api.idempotency_window: {message}"):
            load_settings(environ={"CLARION_API__IDEMPOTENCY_WINDOW": bad})


def test_the_broker_is_the_state_redis_unless_set() -> None:
    s = load_settings(environ={"CLARION_REDIS__URL": "redis://h:1/0"})
    assert (s.broker.url, s.broker_url, s.broker_is_state_redis) == (
        None, "redis://h:1/0", True)
    amqp = load_settings(environ={"CLARION_REDIS__URL": "redis://h:1/0",
                                  "CLARION_BROKER__URL": "amqp://u:p@mq:5672/v"})
    assert (amqp.broker_url, amqp.broker_is_state_redis) == ("amqp://u:p@mq:5672/v", False)
    other = load_settings(environ={"CLARION_REDIS__URL": "redis://h:1/0",
                                   "CLARION_BROKER__URL": "redis://h:1/1"})
    assert (other.broker_url, other.broker_is_state_redis) == ("redis://h:1/1", False)
    with pytest.raises(ConfigError, match=r"broker.url: .*must start with redis://"):
        load_settings(environ={"CLARION_BROKER__URL": "http://mq:5672"})
