"""config/example.toml documents every setting: a field added to config/settings.py without an
entry there (a key line, set or commented out, with a comment) fails here."""

from __future__ import annotations

import re
from pathlib import Path

from config import Settings, load_settings
from config.diagnose import _model_in

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"
SECTION = re.compile(r"^#?\s*\[\[?([a-z_.]+)\]\]?\s*$")
KEY = re.compile(r"^#?\s*([a-z_]+)\s*=")


def setting_paths(model: type = Settings, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        sub = _model_in(field.annotation)
        if sub is None:
            out.add(prefix + name)
        else:
            out |= setting_paths(sub, f"{prefix}{name}.")
    return out


def documented_keys(text: str) -> tuple[set[str], list[str]]:
    """Key paths in the file (set or commented out), and those without a comment."""
    section, keys, bare, previous = "", set(), [], ""
    for line in text.splitlines():
        line = line.strip()
        if m := SECTION.match(line):
            section = m.group(1) + "."
        elif m := KEY.match(line):
            path = section + m.group(1)
            keys.add(path)
            described = previous.startswith("#") and not KEY.match(previous) and not (
                SECTION.match(previous))
            if not described and " # " not in line:
                bare.append(path)
        previous = line
    return keys, bare


def test_every_setting_has_an_entry_with_a_comment():
    keys, bare = documented_keys(EXAMPLE.read_text())
    missing = sorted(setting_paths() - keys)
    assert not missing, f"settings without an entry in config/example.toml: {missing}"
    unknown = sorted(keys - setting_paths())
    assert not unknown, f"config/example.toml names keys that are not settings: {unknown}"
    # Repeated tables ([[worker.groups]]) need their comment once.
    assert not sorted(set(bare) - {"worker.groups.queues"}), bare


def test_the_example_sets_the_defaults():
    """What it shows as set is what you get without it: the example does not drift."""
    example = load_settings(EXAMPLE, environ={})
    assert example.model_dump(exclude={"apps"}) == Settings().model_dump(exclude={"apps"})
    (app,) = example.apps
    assert app.model_dump(exclude={"id", "key", "secret"}) == type(app)(
        id="x", key="k", secret="s").model_dump(exclude={"id", "key", "secret"})


def test_a_field_without_an_entry_is_caught():
    keys, _ = documented_keys("[websocket]\n# The port.\nport = 1\n")
    assert "websocket.host" in setting_paths() - keys
