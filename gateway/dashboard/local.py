"""The dashboard in `clarion up`: an admin token for the local demo, and the banner's lines.

The token is made once and kept in ``data_dir`` (like the demo app), so a browser that signed
in stays signed in across restarts. A token set in the configuration is used as it is; a
dashboard turned off (``dashboard.enabled = false``) gets none.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from config.settings import Settings

TOKEN_FILE = "dashboard-token"


def with_local_token(settings: Settings, data_dir: Path) -> Settings:
    """``settings`` with a dashboard admin token: the configured one, else the demo's."""
    dash = settings.dashboard
    if not dash.enabled or dash.admin_token is not None:
        return settings
    path = data_dir / TOKEN_FILE
    token = path.read_text().strip() if path.exists() else ""
    if len(token) < 16:
        token = secrets.token_urlsafe(24)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return settings.with_overrides(dashboard={"admin_token": token})


def banner_lines(settings: Settings, api_url: str) -> list[str]:
    """The banner's dashboard lines (none when the dashboard is off)."""
    dash = settings.dashboard
    if not dash.active:
        return []
    return [
        f"  Dashboard   {api_url}/dashboard",
        f"  Admin token {dash.admin_token}",
        "",
    ]
