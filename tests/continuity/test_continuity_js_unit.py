"""The extension's own unit tests (clients/js/test, node:test on a real pusher-js against a
scripted server), run here so that the suite's one command runs them too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.continuity.continuity_harness import EXTENSION


def test_the_commonjs_entry_point_is_built_from_the_module(node_modules: Path) -> None:
    # (node_modules: skipped, with the reason, on a machine without node)
    done = subprocess.run(["node", "build.mjs", "--check"], cwd=EXTENSION, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_extension_unit_tests_pass(node_modules: Path) -> None:
    done = subprocess.run(["node", "--test", "test/resume.test.mjs"], cwd=EXTENSION,
                          env={**os.environ, "NODE_PATH": str(node_modules)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
