"""End-to-end suite: several WebSocket nodes and workers, the API, real Redis, faults."""

from __future__ import annotations

from _harness.fixtures import *  # noqa: F403 - fixtures and the log-on-failure hook
