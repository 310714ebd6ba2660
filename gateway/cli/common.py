"""What the `clarion` subcommands (gateway/cli/: main.py, push.py, apps.py) share."""

from __future__ import annotations

import click
import redis

from config import ConfigError, Settings, load_settings


def cli_settings(ctx: click.Context) -> Settings:
    """The settings of this invocation (``clarion --config FILE``, else CLARION_CONFIG/env),
    loaded once; a ConfigError ends the command with exit 2."""
    obj = ctx.find_root().ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings(obj.get("config_path"))
        except ConfigError as exc:
            click.echo(f"clarion: {exc}", err=True)
            ctx.exit(2)
    return obj["settings"]  # type: ignore[no-any-return]


def store_redis(ctx: click.Context, needs: str) -> tuple[redis.Redis, Settings]:
    """A Redis client on ``redis.url`` and the settings; a ClickException (``redis.url is not
    set: {needs}``) when there is no URL."""
    settings = cli_settings(ctx)
    if not settings.redis.url:
        raise click.ClickException(f"redis.url is not set: {needs}")
    return redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5), settings
