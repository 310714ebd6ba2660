"""Issue 15, items 8, 9 and 12: the repository stands alone (no path of the machine it was
built on, every doc it points to exists), its licence and changelog, and one pusher-js snippet
(the banner's is the README's)."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from firsthour_harness import ROOT

# Spelt in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"(?<![\w.])/" + r"(?:work|root|home)/"]))
DOC_REF = re.compile(r"\bdocs/([a-z0-9_-]+\.md)")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def texts() -> dict[str, str]:
    out = {}
    for name in tracked_files():
        try:
            out[name] = (ROOT / name).read_text()
        except UnicodeDecodeError:
            continue
    return out


def test_nothing_names_a_path_outside_the_repository():
    found = [f"{name}: {m.group(0)}" for name, text in texts().items()
             for m in OUTSIDE.finditer(text)]
    assert not found, found


def test_every_doc_pointed_to_exists():
    missing = sorted({f"{name} -> docs/{m.group(1)}" for name, text in texts().items()
                      for m in DOC_REF.finditer(text)
                      if not (ROOT / "docs" / m.group(1)).is_file()})
    assert not missing, missing


def test_licence_and_changelog():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def test_banner_snippet_is_the_readmes():
    from config import Settings
    from config.settings import AppSettings
    from gateway.cli.main import banner

    app = AppSettings(id="1", key="the-key", secret="s")
    printed = banner(Settings(), app, "redis://127.0.0.1:6379/0", embedded=True)
    start = printed.index("const pusher")
    block = printed[start:printed.index("});", start) + 3].replace("the-key", "<app key>")
    readme = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in block.splitlines()]
    assert "\n".join(lines) in "\n".join(line.strip() for line in readme.splitlines())
