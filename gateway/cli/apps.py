"""`clarion apps`: manage apps in the Redis app store, picked up by a running cluster.

    clarion apps list [--json]
    clarion apps show ID [--json]
    clarion apps add [--id ID] [--key KEY] [--secret SECRET] [--set FIELD=VALUE ...] [--json]
    clarion apps remove ID
    clarion apps rotate-secret ID [--secret SECRET]
    clarion apps disable ID
    clarion apps enable ID
    clarion apps set ID FIELD=VALUE ...

Every app has a source: ``config`` (the config file), ``demo`` (made by `clarion up` when
the config has none) or ``store``. Config and demo apps cannot be removed here (disable
them, or edit the config file). Apps in the config file stay where they are; the store (``P
apps``, gateway/state/apps.py) overlays them: changing a config app (rotating its secret,
disabling it) writes an overriding copy to Redis. Every change is published on the bus, so
WebSocket nodes apply it at once (a disabled app's connections are closed with 4003); API
processes see it within a second. ``--set`` values are JSON when they parse as JSON (``--set
max_connections=100``, ``--set 'allowed_origins=["https://app.example"]'``), else strings.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import click
from pydantic import ValidationError

from config import Settings
from config.settings import AppSettings


def _store(ctx: click.Context) -> tuple[Any, Settings]:
    from gateway.cli.common import store_redis
    from gateway.state.apps import AppStore
    from gateway.state.keys import Keys

    client, settings = store_redis(ctx, "the app store lives in Redis")
    return AppStore(client, Keys.of(settings.redis)), settings


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise click.BadParameter(f"{item!r}: use FIELD=VALUE", param_hint="--set")
        try:
            out[field.strip()] = json.loads(raw)
        except ValueError:
            out[field.strip()] = raw
    return out


def validated_app(data: dict[str, Any]) -> AppSettings:
    try:
        return AppSettings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise click.ClickException("invalid app: " + "; ".join(lines)) from None


def save_app(store: Any, app: AppSettings) -> None:
    try:
        store.put(app)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def current_app(store: Any, settings: Settings, app_id: str) -> AppSettings:
    app = store.view(settings).by_id(app_id)
    if app is None:
        raise click.ClickException(f"no app {app_id!r} (neither in the config nor in Redis)")
    return app


def _summary(app: AppSettings, source: str) -> dict[str, Any]:
    return {"id": app.id, "key": app.key, "enabled": app.enabled, "source": source}


def _base_source(settings: Settings, ctx: click.Context, app_id: str) -> str | None:
    """``config`` or ``demo`` for an app of the settings (not of the store), else None."""
    from gateway.cli.common import running

    if settings.app_by_id(app_id) is None:
        return None
    runtime = running(ctx)
    return "demo" if runtime is not None and runtime.demo_app_id == app_id else "config"


def _source(settings: Settings, ctx: click.Context, app_id: str, stored: frozenset[str]
            ) -> str:
    base = _base_source(settings, ctx, app_id)
    if base is None:
        return "store"
    return f"{base}, changed in store" if app_id in stored else base


@click.group()
def apps() -> None:
    """Apps: list, show, add, remove, rotate-secret, disable, enable, set (no restart)."""


@apps.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def apps_list(ctx: click.Context, as_json: bool) -> None:
    """List every app served (config, demo and store apps), with its source."""
    store, settings = _store(ctx)
    view = store.view(settings)
    rows = [_summary(a, _source(settings, ctx, a.id, view.stored)) for a in view.all()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "enabled" if r["enabled"] else "disabled"
        click.echo(f"{r['id']:<10} {r['key']:<34} {state:<9} {r['source']}")


@apps.command("show")
@click.argument("app_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def apps_show(ctx: click.Context, app_id: str, as_json: bool) -> None:
    """Show every setting of one app (its secret included) and its source."""
    store, settings = _store(ctx)
    view = store.view(settings)
    app = current_app(store, settings, app_id)
    data = {"source": _source(settings, ctx, app_id, view.stored), **app.model_dump(mode="json")}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for name, value in data.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        click.echo(f"{name:<29} {shown}")


@apps.command("remove")
@click.argument("app_id")
@click.pass_context
def apps_remove(ctx: click.Context, app_id: str) -> None:
    """Remove an app added with `apps add`: its connections are closed, its key refused."""
    store, settings = _store(ctx)
    current_app(store, settings, app_id)
    base = _base_source(settings, ctx, app_id)
    if base == "config":
        raise click.ClickException(
            f"app {app_id} comes from the config file: remove it there, or `clarion apps "
            f"disable {app_id}`")
    if base == "demo":
        raise click.ClickException(
            f"app {app_id} is the demo app of `clarion up`: it cannot be removed; "
            f"`clarion apps disable {app_id}` stops it serving")
    store.remove(app_id)
    click.echo(f"app {app_id} removed")


@apps.command("add")
@click.option("--id", "app_id", default=None, help="Numeric id (default: the next free one).")
@click.option("--key", default=None, help="App key (default: random).")
@click.option("--secret", default=None, help="App secret (default: random).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Any other app setting, repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the app as JSON.")
@click.pass_context
def apps_add(ctx: click.Context, app_id: str | None, key: str | None, secret: str | None,
             sets: tuple[str, ...], as_json: bool) -> None:
    """Add an app; prints its id, key and secret."""
    store, settings = _store(ctx)
    view = store.view(settings)
    if app_id is None:
        numeric = [int(a.id) for a in view.all() if a.id.isdigit()]
        app_id = str(max(numeric, default=0) + 1)
    if view.by_id(app_id) is not None:
        raise click.ClickException(f"app {app_id!r} already exists")
    key = key or secrets.token_hex(10)
    if view.by_key(key) is not None:
        raise click.ClickException(f"the key {key!r} is already used")
    data = {**_parse_sets(sets), "id": app_id, "key": key,
            "secret": secret or secrets.token_hex(16)}
    app = validated_app(data)
    save_app(store, app)
    if as_json:
        click.echo(json.dumps({"id": app.id, "key": app.key, "secret": app.secret}))
    else:
        click.echo(f"app {app.id} added\n  key:    {app.key}\n  secret: {app.secret}")


@apps.command("rotate-secret")
@click.argument("app_id")
@click.option("--secret", default=None, help="The new secret (default: random).")
@click.pass_context
def apps_rotate_secret(ctx: click.Context, app_id: str, secret: str | None) -> None:
    """Give an app a new secret (signatures made with the old one are refused from now on);
    prints it."""
    store, settings = _store(ctx)
    app = current_app(store, settings, app_id)
    new = validated_app({**app.model_dump(), "secret": secret or secrets.token_hex(16)})
    save_app(store, new)
    click.echo(new.secret)


def _set_enabled(ctx: click.Context, app_id: str, enabled: bool) -> None:
    store, settings = _store(ctx)
    app = current_app(store, settings, app_id)
    save_app(store, validated_app({**app.model_dump(), "enabled": enabled}))
    click.echo(f"app {app_id} {'enabled' if enabled else 'disabled'}")


@apps.command("disable")
@click.argument("app_id")
@click.pass_context
def apps_disable(ctx: click.Context, app_id: str) -> None:
    """Disable an app: its connections are closed (4003), new ones and API calls refused."""
    _set_enabled(ctx, app_id, False)


@apps.command("enable")
@click.argument("app_id")
@click.pass_context
def apps_enable(ctx: click.Context, app_id: str) -> None:
    """Enable a disabled app again."""
    _set_enabled(ctx, app_id, True)


@apps.command("set")
@click.argument("app_id")
@click.argument("pairs", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.pass_context
def apps_set(ctx: click.Context, app_id: str, pairs: tuple[str, ...]) -> None:
    """Change app settings (e.g. max_connections=100 client_events=false)."""
    store, settings = _store(ctx)
    app = current_app(store, settings, app_id)
    changes = _parse_sets(pairs)
    if "id" in changes:
        raise click.ClickException("the id of an app cannot change")
    save_app(store, validated_app({**app.model_dump(), **changes}))
    click.echo(f"app {app_id} updated: {', '.join(sorted(changes))}")
