"""``clarion webhooks``: deliveries (list, show, replay) and endpoints (list, add, remove,
enable) of an app.

    clarion webhooks list|show|replay ... [--app ID]
    clarion webhooks endpoints [--app ID] [--json]
    clarion webhooks add URL --events E1,E2 [--channel-prefix P] [--standard-webhooks]
                         [--header NAME:VALUE ...] [--app ID]
    clarion webhooks remove ENDPOINT_ID|URL [--app ID]
    clarion webhooks enable ENDPOINT_ID [--app ID]

``add`` and ``remove`` change the app's ``webhooks`` through the app store (as
``clarion apps set ID webhooks=[...]`` would): nodes report for the new endpoint within a
second, workers deliver to it; for a config app this writes an overriding copy to Redis.
"""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.cli.common import store_redis


@click.group()
def webhooks() -> None:
    """Webhook deliveries: list, show, replay; endpoints: list, add, remove, enable."""


def _webhook_store(ctx: click.Context, app_id: str | None) -> tuple[Any, str]:
    from gateway.state.apps import AppStore
    from gateway.state.keys import Keys
    from gateway.webhooks.store import Store

    client, settings = store_redis(ctx, "webhook deliveries live in Redis")
    keys = Keys.of(settings.redis)
    # Config apps overlaid by `clarion apps`' Redis store.
    apps = AppStore(client, keys).view(settings)
    if app_id is None:
        if len(apps.all()) != 1:
            raise click.ClickException("several apps are configured: choose one with --app")
        app_id = apps.all()[0].id
    elif apps.by_id(app_id) is None:
        raise click.ClickException(f"no app {app_id!r}")
    return Store(client, keys, settings, apps), app_id


def _parse_time(value: str | None) -> int | None:
    """Unix ms, or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give unix ms or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _ms_text(ms: int | None) -> str:
    if not ms:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


_APP_OPTION = click.option("--app", "app_id", default=None, help="App id (default: the only app).")
_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@webhooks.command("list")
@_APP_OPTION
@click.option("--status", type=click.Choice(["pending", "failed", "dead", "delivered"]),
              default="dead", show_default=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_JSON_OPTION
@click.pass_context
def webhooks_list(ctx: click.Context, app_id: str | None, status: str, limit: int,
                  as_json: bool) -> None:
    """List deliveries by status, newest first."""
    store, app_id = _webhook_store(ctx, app_id)
    items = [d.summary() for d in store.list(app_id, status, limit=limit)]
    if as_json:
        click.echo(json.dumps({"counts": store.counts(app_id), "deliveries": items}, indent=2))
        return
    counts = store.counts(app_id)
    click.echo("  ".join(f"{k}: {v}" for k, v in counts.items()))
    for d in items:
        last = d["last_status"] or d["last_error"] or "-"
        click.echo(f"{d['id']}  {_ms_text(d['created_ms'])}  {d['status']:<9}  "
                   f"attempts={d['attempt_count']}  last={last}  events={d['events']}  "
                   f"{d['url']}" + (f"  ({d['reason']})" if d["reason"] else ""))


@webhooks.command("show")
@click.argument("delivery_id")
@_APP_OPTION
@_JSON_OPTION
@click.pass_context
def webhooks_show(ctx: click.Context, delivery_id: str, app_id: str | None,
                  as_json: bool) -> None:
    """Show one delivery and every attempt."""
    store, app_id = _webhook_store(ctx, app_id)
    d = store.load(delivery_id)
    if d is None or d.app_id != app_id:
        raise click.ClickException(f"no delivery {delivery_id}")
    detail = d.detail()
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    click.echo(f"{d.id}  {d.status}  {d.url}")
    click.echo(f"  created {_ms_text(d.created_ms)}  next attempt {_ms_text(d.next_ms)}"
               + (f"  reason: {d.reason}" if d.reason else ""))
    click.echo(f"  events: {json.dumps(detail['body_events'])}")
    for a in d.attempts:
        outcome = a.get("status") or a.get("error")
        click.echo(f"  #{a['n']} {_ms_text(a['at_ms'])}  {outcome}  {a['latency_ms']} ms"
                   + ("  (replay)" if a.get("manual") else "")
                   + (f"  {a['detail']}" if a.get("detail") else "")
                   + (f"  next {_ms_text(a['next_attempt_ms'])}" if a.get("next_attempt_ms")
                      else ""))


@webhooks.command("replay")
@click.argument("delivery_id", required=False)
@_APP_OPTION
@click.option("--all", "replay_all", is_flag=True,
              help="Replay every delivery with --status (in --since/--until if given).")
@click.option("--status", type=click.Choice(["dead", "failed"]), default="dead",
              show_default=True)
@click.option("--since", default=None, help="Created at or after (unix ms or ISO 8601).")
@click.option("--until", default=None, help="Created at or before (unix ms or ISO 8601).")
@click.pass_context
def webhooks_replay(ctx: click.Context, delivery_id: str | None, app_id: str | None,
                    replay_all: bool, status: str, since: str | None,
                    until: str | None) -> None:
    """Replay one delivery, or all (optionally a time range): due now, one attempt each."""
    store, app_id = _webhook_store(ctx, app_id)
    if delivery_id:
        if replay_all or since or until:
            raise click.UsageError("give a delivery id or --all/--since/--until, not both")
        outcome = store.replay(app_id, delivery_id)
        if outcome == "missing":
            raise click.ClickException(f"no delivery {delivery_id}")
        click.echo(f"{delivery_id}: {outcome}")
        return
    if not (replay_all or since or until):
        raise click.UsageError("give a delivery id, --all, or a time range")
    ids = store.replay_many(app_id, status, _parse_time(since), _parse_time(until))
    click.echo(f"replayed {len(ids)} deliveries")


@webhooks.command("endpoints")
@_APP_OPTION
@_JSON_OPTION
@click.pass_context
def webhooks_endpoints(ctx: click.Context, app_id: str | None, as_json: bool) -> None:
    """List the app's endpoints and whether they are disabled or failing."""
    store, app_id = _webhook_store(ctx, app_id)
    items = store.endpoints(app_id)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for e in items:
        state = ("DISABLED " + _ms_text(e["disabled_at_ms"]) + f" ({e['disabled_reason']})"
                 if e["disabled"] else
                 f"failing since {_ms_text(e['failing_since_ms'])}"
                 if e["failing_since_ms"] else "ok")
        click.echo(f"{e['endpoint_id']}  {e['url']}  {state}")


@webhooks.command("enable")
@click.argument("endpoint_id")
@_APP_OPTION
@click.pass_context
def webhooks_enable(ctx: click.Context, endpoint_id: str, app_id: str | None) -> None:
    """Enable a disabled endpoint again (then replay its dead deliveries)."""
    store, app_id = _webhook_store(ctx, app_id)
    if endpoint_id not in {e["endpoint_id"] for e in store.endpoints(app_id)}:
        raise click.ClickException(f"no endpoint {endpoint_id}")
    store.enable_endpoint(app_id, endpoint_id)
    click.echo(f"{endpoint_id}: enabled")


def _app_store(ctx: click.Context) -> tuple[Any, Any]:
    from gateway.state.apps import AppStore
    from gateway.state.keys import Keys

    client, settings = store_redis(ctx, "the app store lives in Redis")
    return AppStore(client, Keys.of(settings.redis)), settings


def _save_webhooks(ctx: click.Context, app_id: str | None, change: Any) -> str:
    """Apply ``change(app) -> new webhooks list`` to the app and store it; the app id."""
    from gateway.cli.apps import current_app, save_app, validated_app

    store, app_id = _webhook_store(ctx, app_id)
    apps, settings = _app_store(ctx)
    app = current_app(apps, settings, app_id)
    hooks = change(app)
    save_app(apps, validated_app({**app.model_dump(), "webhooks": hooks}))
    return app_id


def _parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: use NAME:VALUE", param_hint="--header")
        out[name.strip()] = value.strip()
    return out


@webhooks.command("add")
@click.argument("url")
@click.option("--events", required=True,
              help="Comma-separated: channel_occupied, channel_vacated, member_added, "
              "member_removed, client_event, cache_miss, subscription_count.")
@click.option("--channel-prefix", default=None, help="Only channels starting with this.")
@click.option("--standard-webhooks", is_flag=True,
              help="Also send the Standard Webhooks headers.")
@click.option("--header", "headers", multiple=True, metavar="NAME:VALUE",
              help="Extra request header, repeatable.")
@_APP_OPTION
@click.pass_context
def webhooks_add(ctx: click.Context, url: str, events: str, channel_prefix: str | None,
                 standard_webhooks: bool, headers: tuple[str, ...], app_id: str | None) -> None:
    """Add an endpoint to the app (reported to within a second, no restart)."""
    endpoint = {"url": url, "events": [e.strip() for e in events.split(",") if e.strip()],
                "channel_prefix": channel_prefix, "standard_webhooks": standard_webhooks,
                "headers": _parse_headers(headers)}

    def change(app: Any) -> list[Any]:
        if any(e.url == url for e in app.webhooks):
            raise click.ClickException(f"app {app.id} already has an endpoint for {url}")
        return [*(e.model_dump() for e in app.webhooks), endpoint]

    app_id = _save_webhooks(ctx, app_id, change)
    from gateway.webhooks.events import endpoint_id

    click.echo(f"{endpoint_id(app_id, url)}  {url}: added to app {app_id}")


@webhooks.command("remove")
@click.argument("endpoint")
@_APP_OPTION
@click.pass_context
def webhooks_remove(ctx: click.Context, endpoint: str, app_id: str | None) -> None:
    """Remove an endpoint (by its id, as `webhooks endpoints` shows, or its URL)."""
    from gateway.webhooks.events import endpoint_id

    def change(app: Any) -> list[Any]:
        kept = [e for e in app.webhooks
                if endpoint not in (e.url, endpoint_id(app.id, e.url))]
        if len(kept) == len(app.webhooks):
            raise click.ClickException(f"app {app.id} has no endpoint {endpoint}")
        return [e.model_dump() for e in kept]

    app_id = _save_webhooks(ctx, app_id, change)
    click.echo(f"{endpoint}: removed from app {app_id}")
