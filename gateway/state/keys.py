"""The Redis key schema: every key Clarion writes, in one place.

All keys start with ``settings.redis.key_prefix`` (default ``clarion:``), shown as ``P``.

| key                           | type   | holds                                         | lifetime              |
|-------------------------------|--------|-----------------------------------------------|-----------------------|
| P bus                         | pubsub | bus messages (see bus.py) to every WS node    | -                     |
| P sn:{app}:{channel}          | string | last serial given to an event on the channel  | history.ttl, renewed  |
| P h:{app}:{channel}           | zset   | recent events, score = serial                 | history.ttl, renewed  |
| P nodes                       | zset   | node id -> last heartbeat (unix ms)           | entries swept         |
| P occ:{app}:{node}            | hash   | channel -> subscriptions on that node         | deleted with the node |
| P pm:{app}:{channel}          | hash   | presence user id -> user_info JSON            | while members remain  |
| P pc:{app}:{channel}          | hash   | presence user id -> connection count          | while members remain  |
| P ps:{app}:{channel}          | hash   | presence socket id -> user id                 | while members remain  |
| P np:{node}                   | set    | "{app}\\x1f{channel}\\x1f{socket}" presence rows | deleted with the node |
| P sweep:{node}                | string | lock held by the node cleaning up a dead one  | 30 s                  |

Serials start at the Redis server time in microseconds when a channel's counter is created,
then count up by one. A counter that expired and is created again therefore starts above any
serial it gave before, so nodes never mistake new events for duplicates.
"""

from __future__ import annotations

SEP = "\x1f"


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bus = f"{prefix}bus"
        self.nodes = f"{prefix}nodes"

    def serial(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}sn:{app_id}:{channel}"

    def history(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}h:{app_id}:{channel}"

    def occupancy(self, app_id: str, node_id: str) -> str:
        return f"{self.prefix}occ:{app_id}:{node_id}"

    def occupancy_pattern(self, node_id: str) -> str:
        return f"{self.prefix}occ:*:{node_id}"

    def presence_members(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}pm:{app_id}:{channel}"

    def presence_counts(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}pc:{app_id}:{channel}"

    def presence_sockets(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}ps:{app_id}:{channel}"

    def node_presence(self, node_id: str) -> str:
        return f"{self.prefix}np:{node_id}"

    def sweep_lock(self, node_id: str) -> str:
        return f"{self.prefix}sweep:{node_id}"


def presence_row(app_id: str, channel: str, socket_id: str) -> str:
    return SEP.join((app_id, channel, socket_id))


def split_presence_row(row: str) -> tuple[str, str, str]:
    app_id, channel, socket_id = row.split(SEP, 2)
    return app_id, channel, socket_id
