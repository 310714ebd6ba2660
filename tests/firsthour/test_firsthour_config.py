"""Issue 15, item 6: strict configuration, errors that name the key, the variable and the key
meant, and `clarion config check FILE`."""

from __future__ import annotations

from pathlib import Path

import pytest
from firsthour_harness import ROOT, clarion

from config import ConfigError, load_settings

EXAMPLE = ROOT / "config" / "example.toml"


def test_the_projects_own_variables_do_not_break_commands(tmp_path: Path):
    out = clarion(tmp_path, "config", "check", str(EXAMPLE),
                  CLARION_TEST_CACHE=str(tmp_path), CLARION_HOME=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{EXAMPLE}: ok")


@pytest.mark.parametrize(("toml", "message"), [
    ("[websocket]\nprot = 1\n", "unknown key websocket.prot; did you mean port?"),
    ("[api]\nworkers = \"2\"\n", "api.workers: Input should be a valid integer"),
    ("[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\nclient_events = \"yes\"\n",
     "apps.0.client_events: Input should be a valid boolean"),
    ("log_level = \"verbose\"\n", "log_level: Input should be 'debug', 'info'"),
    ("[websocket]\ntls_cert_file = \"/nonexistent.pem\"\n",
     "websocket.tls_cert_file: no such file: /nonexistent.pem"),
    ("[broker]\nurl = \"mq.example:5672\"\n",
     "broker.url: must start with redis://, rediss://, unix://, amqp://"),
])
def test_config_check_refuses_with_the_key(tmp_path: Path, toml: str, message: str):
    f = tmp_path / "clarion.toml"
    f.write_text(toml)
    out = clarion(tmp_path, "config", "check", str(f))
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_config_check_names_the_variable(tmp_path: Path):
    out = clarion(tmp_path, "config", "check", str(EXAMPLE), CLARION_WEBSOCKET__PROT="1",
                  CLARION_API__BUFFER_BODIES="yes")
    assert out.returncode == 2
    assert ("unknown key websocket.prot; did you mean port? (from CLARION_WEBSOCKET__PROT)"
            in out.stderr)
    assert ("api.buffer_bodies: Input should be a valid boolean (from "
            "CLARION_API__BUFFER_BODIES)") in out.stderr
    typo = clarion(tmp_path, "config", "check", str(EXAMPLE), CLARION_WEBSOKET__PORT="1")
    assert typo.returncode == 2
    assert "unknown key websoket from CLARION_WEBSOKET__PORT; did you mean websocket?" in (
        typo.stderr)


def test_numbers_and_booleans_are_not_coerced():
    for env in ({"CLARION_API__WORKERS": '"2"'}, {"CLARION_API__BUFFER_BODIES": "yes"},
                {"CLARION_APPS": '[{"id": "1", "key": "k", "secret": "s", "enabled": 1}]'}):
        with pytest.raises(ConfigError, match="Input should be a valid"):
            load_settings(environ=env)
    # Real numbers and booleans, and numeric app ids (the Python SDK's), still work.
    s = load_settings(environ={"CLARION_API__WORKERS": "3", "CLARION_API__BUFFER_BODIES": "false",
                               "CLARION_APPS": '[{"id": 7, "key": "k", "secret": "s"}]'})
    assert (s.api.workers, s.api.buffer_bodies, s.apps[0].id) == (3, False, "7")


def test_config_check_of_a_missing_file(tmp_path: Path):
    out = clarion(tmp_path, "config", "check", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_config_check_accepts_a_broker_and_hides_its_password(tmp_path: Path):
    f = tmp_path / "clarion.toml"
    f.write_text('[broker]\nurl = "amqp://clarion:s3cret@mq.example:5672/clarion"\n')
    out = clarion(tmp_path, "config", "check", str(f))
    assert out.returncode == 0, out.stderr
    assert "broker     amqp://clarion:**@mq.example:5672/clarion" in out.stdout
    assert "s3cret" not in out.stdout
    default = clarion(tmp_path, "config", "check", str(EXAMPLE))
    assert "broker     the Redis above" in default.stdout
