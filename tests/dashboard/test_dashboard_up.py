"""`clarion up` makes a dashboard token for its demo, prints it with the URL, and keeps it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from config.settings import Settings
from gateway.dashboard.local import TOKEN_FILE, banner_lines, with_local_token
from tests.e2e.test_e2e_cli import Up


def test_a_token_is_made_once_and_kept(tmp_path: Path) -> None:
    first = with_local_token(Settings(), tmp_path)
    token = first.dashboard.admin_token
    assert token and len(token) >= 16 and first.dashboard.active
    assert (tmp_path / TOKEN_FILE).stat().st_mode & 0o077 == 0  # the owner's only
    assert with_local_token(Settings(), tmp_path).dashboard.admin_token == token


def test_a_configured_token_or_a_dashboard_turned_off_is_left_alone(tmp_path: Path) -> None:
    mine = Settings().with_overrides(dashboard={"admin_token": "configured-token-123"})
    assert with_local_token(mine, tmp_path).dashboard.admin_token == "configured-token-123"
    off = Settings().with_overrides(dashboard={"enabled": False})
    assert with_local_token(off, tmp_path).dashboard.admin_token is None
    assert banner_lines(off, "http://h:1") == []
    assert not (tmp_path / TOKEN_FILE).exists()


@pytest.mark.slow
def test_up_prints_the_dashboard_and_its_token_signs_in(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        banner = up.wait_banner()
        url = re.search(r"Dashboard\s+(\S+)", banner).group(1)
        token = re.search(r"Admin token\s+(\S+)", banner).group(1)
        assert url == f"http://127.0.0.1:{up.api_port}/dashboard"
        assert requests.get(url, timeout=10).status_code == 200
        s = requests.Session()
        assert s.post(f"{url}/api/signin", json={"token": token}, timeout=10).status_code == 200
        apps = s.get(f"{url}/api/apps", timeout=10).json()["apps"]
        assert [a["id"] for a in apps] == ["1"]
    finally:
        assert up.stop() == 0
