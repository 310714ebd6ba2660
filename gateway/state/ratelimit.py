"""REST API requests per second per app (``AppSettings.max_api_requests_per_second``),
shared by every API process through Redis: one counter per app and wall-clock second
(``P rl:{app}:{second}``, expires after 2 s), incremented by a script so the count and its
expiry are set together. Past the limit the API answers 429 with ``Retry-After`` (the
seconds until the window turns)."""

from __future__ import annotations

import math
import time
from typing import Any

from gateway.state.keys import Keys
from gateway.state.redis_client import register_script

# KEYS: the window's counter. Returns the count including this request.
HIT_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
return n
"""


class ApiRateLimiter:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.keys = keys
        self._hit = register_script(redis, HIT_LUA)

    def retry_after(self, app_id: str, limit: int, now: float | None = None) -> int | None:
        """Count one request; None if within ``limit`` per second, else the seconds to wait."""
        now = time.time() if now is None else now
        second = int(now)
        count = int(self._hit(keys=[self.keys.api_rate(app_id, second)]))
        if count <= limit:
            return None
        return max(1, math.ceil(second + 1 - now))
