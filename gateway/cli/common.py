"""What the `clarion` subcommands (gateway/cli/: main.py, push.py, apps.py) share."""

from __future__ import annotations

from pathlib import Path

import click
import redis
from pydantic import ValidationError

from config import ConfigError, Settings, load_settings
from gateway.cli.runtime import Runtime, read_runtime, starting
from gateway.state.redis_client import sync_client


class NothingRunning(click.ClickException):
    """No Redis to act on: a usage problem, exit 2 like a bad configuration."""

    exit_code = 2


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


def running(ctx: click.Context) -> Runtime | None:
    """The `clarion up` running with this invocation's data dir, if any."""
    return read_runtime(Path(cli_settings(ctx).data_dir).resolve())


def operator_settings(ctx: click.Context, needs: str) -> Settings:
    """The settings of the deployment an operator command acts on: ``redis.url`` if set,
    else the Redis of the `clarion up` running with this data dir, plus its demo app. A
    ClickException saying what to do when there is neither."""
    settings = cli_settings(ctx)
    runtime = running(ctx)
    if runtime is not None and not settings.redis.configured:
        # The running instance's own settings: its apps (config and demo), its Redis.
        try:
            settings = Settings.model_validate(runtime.settings)
        except ValidationError as exc:
            raise click.ClickException(f"cannot read the running instance's settings: {exc}"
                                       ) from None
    if not settings.redis.configured:
        where = Path(settings.data_dir).resolve()
        if starting(where):
            raise NothingRunning(f"{needs}, and the `clarion up` using {where} is still "
                                 "starting: try again once it prints \"Clarion is up.\"")
        raise NothingRunning(
            f"{needs}, but redis.url is not set and no `clarion up` is running with data dir "
            f"{where}: run this command where `clarion up` runs (or with its data_dir), or "
            "give the deployment's Redis (--config FILE with [redis] url, or "
            "CLARION_REDIS__URL)"
        )
    return settings


def only_app_id(settings: Settings) -> str:
    """The id of the deployment's only app (config, demo or store); a ClickException asking
    for ``--app`` when there are several."""
    from gateway.state.apps import AppStore
    from gateway.state.keys import Keys

    client = sync_client(settings.redis, "this command", socket_connect_timeout=5)
    try:
        apps = AppStore(client, Keys.of(settings.redis)).view(settings).all()
    except redis.exceptions.RedisError as exc:
        raise click.ClickException(f"cannot read from Redis ({settings.redis.describe()}): {exc}"
                                   ) from None
    finally:
        client.close()
    if len(apps) != 1:
        raise click.ClickException(f"{len(apps)} apps are served: choose one with --app")
    return apps[0].id


def store_redis(ctx: click.Context, needs: str) -> tuple[redis.Redis, Settings]:
    """A Redis client on the deployment's Redis (:func:`operator_settings`) and the settings."""
    settings = operator_settings(ctx, needs)
    return sync_client(settings.redis, "this command", socket_connect_timeout=5), settings
