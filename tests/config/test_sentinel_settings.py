"""``[redis]`` on Sentinel: the keys, what is refused, and how `clarion config check` shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config import ConfigError, load_settings
from gateway.cli.main import main

SENTINEL = ('[redis]\nsentinels = ["10.0.0.1:26379", "10.0.0.2:26379"]\n'
            'service_name = "clarion"\n')


def _load(tmp_path: Path, toml: str):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    return load_settings(f, environ={})


def test_sentinels_and_service_name(tmp_path: Path) -> None:
    s = _load(tmp_path, SENTINEL + 'password = "pw"\ndb = 2\nsentinel_password = "spw"\n')
    assert s.redis.configured and s.redis.url is None
    assert s.redis.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert (s.redis.password, s.redis.db, s.redis.sentinel_password) == ("pw", 2, "spw")
    assert "pw" not in s.redis.describe() and "'clarion'" in s.redis.describe()


def test_from_the_environment() -> None:
    s = load_settings(environ={"CLARION_REDIS__SENTINELS": '["h:26379"]',
                               "CLARION_REDIS__SERVICE_NAME": "m"})
    assert s.redis.sentinel_addresses == [("h", 26379)] and s.redis.service_name == "m"


@pytest.mark.parametrize(("toml", "message"), [
    (SENTINEL + 'url = "redis://h:1/0"\n', "give url or sentinels, not both"),
    ('[redis]\nsentinels = ["h:26379"]\n', "sentinels and service_name go together"),
    ('[redis]\nservice_name = "m"\n', "sentinels and service_name go together"),
    ('[redis]\nsentinels = ["h"]\nservice_name = "m"\n', "'h' is not host:port"),
    ('[redis]\nsentinels = ["h:99999"]\nservice_name = "m"\n', "is not host:port"),
    ('[redis]\nurl = "redis://h:1/0"\npassword = "x"\n', "apply to sentinels only"),
    (SENTINEL + "db = 16\n", "redis.db"),
])
def test_refused(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, toml)


def test_not_configured_without_url_or_sentinels() -> None:
    s = load_settings(environ={})
    assert not s.redis.configured
    assert s.redis.describe().startswith("embedded")


def test_config_check_shows_the_sentinels(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(SENTINEL)
    result = CliRunner().invoke(main, ["config", "check", str(f)], env={})
    assert result.exit_code == 0, result.output
    assert "sentinel master 'clarion' via 10.0.0.1:26379, 10.0.0.2:26379 (db 0)" in result.output
