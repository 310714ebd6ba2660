"""The Redis key schema: every key Clarion writes, in one place.

All keys start with ``settings.redis.key_prefix`` (default ``clarion:``), shown as ``P``.

On Redis Cluster (``redis.cluster``) every ``{app}`` below is written as a hash tag, ``{1}``
for app 1 (``KeySpace.app``): all of an app's keys are in one slot, so that every script and
MULTI, which only ever name one app's keys, runs on one master. Keys without an app (``P
nodes``, ``P bus``, ``P wh:leader``) are in slots of their own and are never named in the same
script as an app's; what an app's script would have to share with them is kept per app
instead (the riders' ``lv:*``, a node's presence rows and sign-ins, the webhook queues: the
methods say which). Without Cluster the names are as below (no braces).

| key                           | type   | holds                                         | lifetime              |
|-------------------------------|--------|-----------------------------------------------|-----------------------|
| P bus                         | pubsub | control messages (see bus.py) to every WS node| -                     |
| P bus:{app}:{channel}         | pubsub | the channel's events (see bus.py), to the WS  | -                     |
|                               |        | nodes with local subscribers on it            |                       |
| P sn:{app}:{channel}          | string | last serial given to an event on the channel  | a day (at least       |
|                               |        |                                               | retention), renewed   |
| P h:{app}:{channel}           | zset   | the channel's log: events of the last         | retention, renewed    |
|                               |        | retention seconds (at most max_events),       |                       |
|                               |        | score = serial, "<serial> <prev> <entry>"     |                       |
| P nodes                       | zset   | node id -> last heartbeat (unix ms)           | entries swept         |
| P occ:{app}:{node}            | hash   | channel -> subscriptions on that node         | deleted with the node |
| P pm:{app}:{channel}          | hash   | presence user id -> user_info JSON            | while members remain  |
| P pc:{app}:{channel}          | hash   | presence user id -> connection count          | while members remain  |
| P ps:{app}:{channel}          | hash   | presence socket id -> user id                 | while members remain  |
| P np:{node}                   | set    | "{app}\\x1f{channel}\\x1f{socket}" presence rows | deleted with the node |
|                               |        | (on Cluster np:{app}:{node}, one per app)     |                       |
| P sweep:{node}                | string | lock held by the node cleaning up a dead one  | 30 s                  |
| P live                        | list   | Celery queue ``live`` (kombu's key)           | until consumed        |
| P lv:armed                    | string | a ``clarion.live.deliver`` task is queued and | until it drains: 5 s  |
|                               |        | has not drained ``lv:pending`` yet            | queued, a 1 s lease   |
|                               |        |                                               | while it runs         |
| P lv:pending                  | list   | task bodies of requests that rode on the      | retention, renewed    |
|                               |        | queued task instead of queueing their own     |                       |
|                               |        | (on Cluster: lv:{app}:armed, lv:{app}:pending |                       |
|                               |        | per app)                                      |                       |
| P idem:{app}/{key}            | hash   | an idempotency key of a publish: f (request   | the idempotency       |
|                               |        | fingerprint), r (the response body) or, until | window from the first |
|                               |        | it is known, t (accepted at, Redis us). "/"   | request, not renewed  |
|                               |        | because app ids have none and keys may have   |                       |
|                               |        | ":" (app "1:a", key "b" != app "1", key "a:b")|                       |

Webhooks (gateway/webhooks, workers/webhooks; "\\x1f" separates fields inside members):

| key                           | type   | holds                                         | lifetime              |
|-------------------------------|--------|-----------------------------------------------|-----------------------|
| P whc:{app}:{channel}         | hash   | node id -> subscriptions it reported          | while subscribed      |
| P whn:{node}                  | set    | "{app}\\x1f{channel}" the node has counts for  | until the node is swept |
| P wh:nodes                    | hash   | node id -> unix ms it first reported          | until the node is swept |
| P whr:{app}:{channel}         | string | "1" while channel_occupied is the last report | until vacated         |
| P whm:{app}:{channel}         | set    | user ids last reported as members             | until removed         |
| P whk:{app}:{channel}         | string | last subscription_count reported              | 1 day                 |
| P wh:due                      | zset   | debounced transitions, score = due unix ms:   | until due             |
|                               |        | "v\\x1f{app}\\x1f{channel}" vacate,              |                       |
|                               |        | "m\\x1f{app}\\x1f{channel}\\x1f{user}" member left, |                   |
|                               |        | "c\\x1f{app}\\x1f{channel}" subscription count    |                       |
| P wh:events                   | stream | webhook events from the nodes (group "wh")    | deleted once batched  |
| P whd:{id}                    | hash   | one delivery: app, url, endpoint, events JSON, | until delivered/dead, |
|                               |        | created, status, next, attempts JSON          | then retention        |
| P wh:retry                    | zset   | delivery id -> next attempt (unix ms); also a | until delivered/dead  |
|                               |        | lease while enqueued or being attempted       |                       |
| P whi:{app}:{status}          | zset   | delivery ids by status (pending, failed,      | pruned by retention   |
|                               |        | dead, delivered), score = created unix ms     |                       |
| P whl:{id}                    | string | lock of the worker attempting the delivery    | timeout + lease       |
| P whe:{app}:{endpoint}        | hash   | endpoint health: first_failure, disabled,     | failures: 2 x disable |
|                               |        | disabled_at, reason, url                      | window; disabled: kept|
| P wh:leader                   | string | token of the worker running pump + scheduler  | a few seconds, renewed|

On Redis Cluster the per-app queues move into the app's slot, so that every webhook script
touches one slot: ``P wh:due:{app}``, ``P wh:events:{app}``, ``P wh:retry:{app}``, and
``P whd:{app}:{id}`` (the delivery id ends with ``_{app}``, gateway/webhooks/store.py);
``P whn:{node}`` and ``P wh:nodes`` stay untagged, written apart from the scripts; ``P wh:wake``
(zset, app -> unix ms) tells the leader which apps to look at, written after the app's keys.

Channels, complete (cache channels, limits, sign-in, apps; docs/channels.md):

| key                           | type   | holds                                         | lifetime              |
|-------------------------------|--------|-----------------------------------------------|-----------------------|
| P cache:{app}:{channel}       | hash   | last API event of a cache channel: s (serial),| cache.ttl             |
|                               |        | e (event), d (data); never overwritten by an  |                       |
|                               |        | older serial                                  |                       |
| P conn:{app}                  | hash   | node id -> connections of the app on the node | fields swept with node|
| P nconn:{node}                | set    | app ids the node has a conn:{app} field in    | deleted with the node |
| P uon:{app}                   | hash   | user id -> signed-in connections (cluster)    | while signed in       |
| P uso:{app}                   | hash   | user id -> sign-outs so far (cluster), so the | never                 |
|                               |        | push worker tells "stayed signed in"          |                       |
| P nu:{node}                   | hash   | "{app}\x1f{user}" -> signed-in connections on | deleted with the node |
|                               |        | the node (on Cluster nu:{app}:{node})         |                       |
| P sct:{app}:{channel}         | string | subscription_count broadcast slot (throttle)  | 5 s                   |
| P rl:{app}:{unix second}      | string | REST API requests of the app in that second   | 2 s                   |
| P apps                        | hash   | app id -> AppSettings JSON (`clarion apps`),  | kept                  |
|                               |        | overlaid on the config file's apps            |                       |

Dashboard (gateway/dashboard, docs/dashboard.md):

| key                           | type   | holds                                         | lifetime              |
|-------------------------------|--------|-----------------------------------------------|-----------------------|
| P dbg:{app}                   | stream | the app's debug log: k (kind), s (source), d  | trimmed to about      |
|                               |        | (details JSON); written only while watched    | log_max_entries       |
| P dbg:watch                   | zset   | app id -> unix ms until which a console       | pruned when renewed   |
|                               |        | watches it                                    |                       |
| P dts:{app}:{minute}          | hash   | chart samples: c:{node} connections, e events | chart_minutes         |
|                               |        | accepted, d messages delivered in that minute |                       |
| P dbgsi:{address}:{minute}    | string | failed dashboard sign-ins from that address   | 2 minutes             |

A serial is ``max(previous serial + 1, Redis time in microseconds)`` and every logged event
carries its predecessor's (gateway/state/history.py): serials only grow, even across a counter
that expired or a Redis that lost its data, and a reader can tell a complete chain from a gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from config.settings import RedisSettings

SEP = "\x1f"


class KeySpace:
    """A family of keys under one prefix, tagged per app on Redis Cluster."""

    def __init__(self, prefix: str, cluster: bool = False) -> None:
        self.prefix = prefix
        self.cluster = cluster

    @classmethod
    def of(cls, redis: RedisSettings) -> Self:
        return cls(redis.key_prefix, redis.cluster)

    def app(self, app_id: str) -> str:
        """The app id as it appears in keys: a hash tag on Redis Cluster, so that every key
        of an app is in one slot (see the module's docstring)."""
        return "{" + app_id + "}" if self.cluster else app_id


class Keys(KeySpace):
    def __init__(self, prefix: str, cluster: bool = False) -> None:
        super().__init__(prefix, cluster)
        self.bus = f"{prefix}bus"
        # Every channel's topic (PSUBSCRIBE pattern, for tools and tests).
        self.bus_channels = f"{prefix}bus:*"
        self.nodes = f"{prefix}nodes"

    def bus_channel(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}bus:{self.app(app_id)}:{channel}"

    def serial(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}sn:{self.app(app_id)}:{channel}"

    @property
    def live_armed(self) -> str:
        return f"{self.prefix}lv:armed"

    @property
    def live_pending(self) -> str:
        return f"{self.prefix}lv:pending"

    # On Cluster an app's requests ride on a task of that app, so that the accept script
    # stays in the app's slot; alone, every app's requests share one task.
    def live_armed_of(self, app_id: str) -> str:
        return f"{self.prefix}lv:{self.app(app_id)}:armed" if self.cluster else self.live_armed

    def live_pending_of(self, app_id: str) -> str:
        return (f"{self.prefix}lv:{self.app(app_id)}:pending" if self.cluster
                else self.live_pending)

    def history(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}h:{self.app(app_id)}:{channel}"

    def idempotency(self, app_id: str, key: str) -> str:
        return f"{self.prefix}idem:{self.app(app_id)}/{key}"

    def occupancy(self, app_id: str, node_id: str) -> str:
        return f"{self.prefix}occ:{self.app(app_id)}:{node_id}"

    def occupancy_pattern(self, node_id: str) -> str:
        return f"{self.prefix}occ:*:{node_id}"

    def presence_members(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}pm:{self.app(app_id)}:{channel}"

    def presence_counts(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}pc:{self.app(app_id)}:{channel}"

    def presence_sockets(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}ps:{self.app(app_id)}:{channel}"

    # A node's presence rows and sign-ins: on Cluster one key per app, in the app's slot (the
    # scripts that change a channel's members or a user's count change them too); a sweep
    # finds a node's keys with the app "*" as a SCAN pattern (gateway/state/registry.py).
    def node_presence(self, node_id: str, app_id: str = "") -> str:
        if self.cluster:
            return f"{self.prefix}np:{self.app(app_id)}:{node_id}"
        return f"{self.prefix}np:{node_id}"

    def sweep_lock(self, node_id: str) -> str:
        return f"{self.prefix}sweep:{node_id}"

    # ----------------------------------------------------------------- webhooks

    def wh_counts(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}whc:{self.app(app_id)}:{channel}"

    def wh_node_channels(self, node_id: str) -> str:
        return f"{self.prefix}whn:{node_id}"

    @property
    def wh_nodes(self) -> str:
        return f"{self.prefix}wh:nodes"

    def wh_reported(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}whr:{self.app(app_id)}:{channel}"

    def wh_members(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}whm:{self.app(app_id)}:{channel}"

    def wh_count_reported(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}whk:{self.app(app_id)}:{channel}"

    @property
    def wh_due(self) -> str:
        return f"{self.prefix}wh:due"

    @property
    def wh_events(self) -> str:
        return f"{self.prefix}wh:events"

    @property
    def wh_retry(self) -> str:
        return f"{self.prefix}wh:retry"

    # The queues of one app: the global ones above, or on Redis Cluster the app's own (in
    # its slot, with the app's other webhook keys).

    def wh_due_of(self, app_id: str) -> str:
        return f"{self.wh_due}:{self.app(app_id)}" if self.cluster else self.wh_due

    def wh_events_of(self, app_id: str) -> str:
        return f"{self.wh_events}:{self.app(app_id)}" if self.cluster else self.wh_events

    def wh_retry_of(self, app_id: str) -> str:
        return f"{self.wh_retry}:{self.app(app_id)}" if self.cluster else self.wh_retry

    @property
    def wh_wake(self) -> str:
        """Redis Cluster only: app -> when the leader should look at its queues (a hint)."""
        return f"{self.prefix}wh:wake"

    def wh_delivery(self, delivery_id: str, app_id: str) -> str:
        if self.cluster:
            return f"{self.prefix}whd:{self.app(app_id)}:{delivery_id}"
        return f"{self.prefix}whd:{delivery_id}"

    def wh_index(self, app_id: str, status: str) -> str:
        return f"{self.prefix}whi:{self.app(app_id)}:{status}"

    def wh_lock(self, delivery_id: str) -> str:
        return f"{self.prefix}whl:{delivery_id}"

    def wh_endpoint(self, app_id: str, endpoint_id: str) -> str:
        return f"{self.prefix}whe:{self.app(app_id)}:{endpoint_id}"

    @property
    def wh_leader(self) -> str:
        return f"{self.prefix}wh:leader"

    # ----------------------------------------------------------------- channels, complete

    def cache(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}cache:{self.app(app_id)}:{channel}"

    def connections(self, app_id: str) -> str:
        return f"{self.prefix}conn:{self.app(app_id)}"

    def node_connections(self, node_id: str) -> str:
        return f"{self.prefix}nconn:{node_id}"

    def users_online(self, app_id: str) -> str:
        return f"{self.prefix}uon:{self.app(app_id)}"

    def users_signouts(self, app_id: str) -> str:
        return f"{self.prefix}uso:{self.app(app_id)}"

    def node_users(self, node_id: str, app_id: str = "") -> str:
        if self.cluster:
            return f"{self.prefix}nu:{self.app(app_id)}:{node_id}"
        return f"{self.prefix}nu:{node_id}"

    def subscription_count_slot(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}sct:{self.app(app_id)}:{channel}"

    def api_rate(self, app_id: str, second: int) -> str:
        return f"{self.prefix}rl:{self.app(app_id)}:{second}"

    @property
    def apps(self) -> str:
        return f"{self.prefix}apps"


def presence_row(app_id: str, channel: str, socket_id: str) -> str:
    return SEP.join((app_id, channel, socket_id))


def split_presence_row(row: str) -> tuple[str, str, str]:
    app_id, channel, socket_id = row.split(SEP, 2)
    return app_id, channel, socket_id
