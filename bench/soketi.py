"""soketi (Node + uWebSockets.js), the best-known open-source Pusher-protocol server, installed
and started by the bench itself so that it can be measured beside Clarion.

``ensure_installed()`` runs ``npm install`` of soketi 1.6.1 once into ``$BENCH_SOKETI_DIR``
(default ``~/.cache/clarion-bench/soketi``). soketi's package names uWebSockets.js by a git
URL, which a machine limited to the npm registry cannot fetch; npm's ``overrides`` swap in a
registry repackaging of the same prebuilt binaries. ``command()`` and ``environment(port)``
start it in the foreground on 127.0.0.1:PORT with app id ``app-id``, key ``app-key``, secret
``app-secret``, client events and user sign-in on.

    python -m bench.soketi install     # what the first soketi run does anyway
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.6.1"
UWS_OVERRIDE = "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"


def install_dir() -> Path:
    default = Path.home() / ".cache" / "clarion-bench" / "soketi"
    return Path(os.environ.get("BENCH_SOKETI_DIR", default))


def server_js() -> Path:
    return install_dir() / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"


def ensure_installed() -> Path:
    """soketi's entry point, installing it first if needed; RuntimeError if that fails."""
    if server_js().exists():
        return server_js()
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("soketi needs Node.js and npm on PATH")
    target = install_dir()
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(json.dumps({
        "name": "soketi-peer", "version": "1.0.0", "private": True,
        "dependencies": {"@soketi/soketi": VERSION},
        "overrides": {"uWebSockets.js": UWS_OVERRIDE},
    }, indent=1))
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=target, capture_output=True, text=True)
    if done.returncode != 0 or not server_js().exists():
        raise RuntimeError(f"npm install of soketi failed:\n{done.stderr[-2000:]}")
    return server_js()


def command() -> list[str]:
    return ["node", str(ensure_installed()), "start"]


def environment(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SOKETI_PORT=str(port), SOKETI_HOST="127.0.0.1",
        SOKETI_METRICS_SERVER_PORT=str(port + 3600),
        SOKETI_DEFAULT_APP_ID="app-id", SOKETI_DEFAULT_APP_KEY="app-key",
        SOKETI_DEFAULT_APP_SECRET="app-secret",
        SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES="true",
        SOKETI_DEFAULT_APP_USER_AUTHENTICATION="true",
    )
    env.setdefault("SOKETI_DEBUG", "0")
    return env


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m bench.soketi install")
    print(f"soketi installed: {ensure_installed()}")
