"""``clarion push``: Beams push commands (registered on ``clarion`` by gateway/cli/main.py).

    clarion [--config FILE] push status PUBLISH_ID [--app APP_ID] [--json]
    clarion push vapid-keys [--app APP_ID]

``status`` reads the publish from Redis (the same record ``GET /publish_api/v1/instances/{app}/
publishes/{id}`` shows): state, devices targeted, delivered, failed, retried, removed, unknown
(in doubt: sent by a worker that died before the answer; never sent again), retries
still pending, and credential errors. Exit codes: 0 shown, 1 unknown (or expired) publish or
Redis unreachable, 2 bad configuration. ``vapid-keys`` prints a new Web Push key pair (the
private key for ``web_vapid_private_key``, the public one browsers subscribe with).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
import redis

from gateway.cli.common import only_app_id, operator_settings
from gateway.state.publishes import PublishStore
from gateway.state.redis_client import sync_client


@click.group()
def push() -> None:
    """Beams push notifications."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def format_status(app_id: str, status: dict[str, Any]) -> str:
    rows = [
        ("publish", status["publishId"]),
        ("app", app_id),
        ("status", status["status"]),
        ("devices", status["devices"]),
        ("delivered", status["delivered"]),
        ("failed", status["failed"]),
        ("retried", status["retried"]),
        ("removed", status["removed"]),
        ("unknown", status.get("unknown", 0)),
        ("pending retries", status["pending"]),
        ("created", _when(status.get("createdAt"))),
        ("finished", _when(status.get("finishedAt"))),
    ]
    if status.get("createdAt") and status.get("finishedAt"):
        rows.append(("took", f"{status['finishedAt'] - status['createdAt']:.3f} s"))
    for platform, outcomes in sorted((status.get("platforms") or {}).items()):
        rows.append((platform, ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))))
    for platform, description in (status.get("errors") or {}).items():
        rows.append((f"error ({platform})", description))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@push.command()
@click.argument("publish_id")
@click.option("--app", "app_id", default=None,
              help="The app (Beams instance) id (default: the only app).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, publish_id: str, app_id: str, as_json: bool) -> None:
    """Show a publish's delivery status: delivered, failed, retried, removed."""
    settings = operator_settings(ctx, "publishes are recorded in Redis")
    app_id = app_id or only_app_id(settings)
    client = sync_client(settings.redis, "this command", socket_connect_timeout=3,
                         socket_timeout=5)
    try:
        found = PublishStore(client, settings.redis.key_prefix).status(app_id, publish_id)
    except redis.exceptions.RedisError as exc:
        click.echo(f"clarion: cannot read from Redis ({settings.redis.describe()}): {exc}",
                   err=True)
        ctx.exit(1)
    finally:
        client.close()
    if found is None:
        click.echo(
            f"clarion: no publish {publish_id} for app {app_id} (or it has expired)", err=True
        )
        ctx.exit(1)
    click.echo(json.dumps(found, indent=2) if as_json else format_status(app_id, found))


@push.command("vapid-keys")
@click.option("--app", "app_id", default=None, help="Print the keys as this app's TOML section.")
def vapid_keys(app_id: str | None) -> None:
    """Make a VAPID key pair for Web Push: the private key goes in the app's config
    (``web_vapid_private_key``), browsers subscribe with the public one (the web SDK fetches it
    from ``GET /device_api/v1/instances/{id}/web-vapid-public-key``)."""
    from gateway.vapid import generate

    private, public = generate()
    if app_id is None:
        click.echo(f"private key: {private}\npublic key:  {public}")
        return
    click.echo(
        f'# app {app_id}; browsers subscribe with the public key {public}\n'
        f"[apps.push]\n"
        f'web_vapid_private_key = "{private}"\n'
        f'web_vapid_subject = "mailto:you@example.com"  # a contact the push services can use'
    )
