"""``[redis] cluster``: what a Redis Cluster needs, what is refused, and how `clarion config
check` shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config import ConfigError, load_settings
from gateway.cli.main import main

CLUSTER = '[redis]\nurl = "redis://10.0.0.1:7000"\ncluster = true\n'
BROKER = '[broker]\nurl = "redis://10.0.0.9:6379/0"\n'


def _load(tmp_path: Path, toml: str):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    return load_settings(f, environ={})


def test_a_cluster_with_a_broker_apart(tmp_path: Path) -> None:
    s = _load(tmp_path, CLUSTER + BROKER)
    assert s.redis.cluster and s.broker_url == "redis://10.0.0.9:6379/0"
    assert s.redis.describe() == "cluster via redis://10.0.0.1:7000"


@pytest.mark.parametrize(("toml", "message"), [
    (CLUSTER, "redis.cluster needs broker.url"),
    (CLUSTER + '[broker]\nurl = "redis://10.0.0.1:7000"\n', "redis.cluster needs broker.url"),
    ('[redis]\ncluster = true\n' + BROKER, "cluster needs url"),
    ('[redis]\nsentinels = ["h:26379"]\nservice_name = "m"\ncluster = true\n' + BROKER,
     "cluster needs url"),
    (CLUSTER + 'key_prefix = "c{x}:"\n' + BROKER, "no braces"),
    (CLUSTER + BROKER + '[[apps]]\nid = "a}b"\nkey = "k"\nsecret = "s"\n',
     "apps.0.id: no braces"),
])
def test_refused(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, toml)


def test_braces_are_fine_without_cluster(tmp_path: Path) -> None:
    s = _load(tmp_path, '[redis]\nkey_prefix = "c{x}:"\n[[apps]]\nid = "a}b"\nkey = "k"\n'
                        'secret = "s"\n')
    assert s.apps[0].id == "a}b"


def test_config_check_shows_the_cluster(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(CLUSTER + BROKER)
    result = CliRunner().invoke(main, ["config", "check", str(f)], env={})
    assert result.exit_code == 0, result.output
    assert "cluster via redis://10.0.0.1:7000" in result.output
