"""``clarion config check FILE``: validate a configuration without starting anything.

The file is read as the other commands read it, with the CLARION_* variables of the
environment on top (so a deployment's variables are checked too). Exit 0 with a summary when
it is valid, 2 with every error (the key, the variable it came from, the key meant) when not.
"""

from __future__ import annotations

import click
from kombu.utils.url import maybe_sanitize_url

from config import ConfigError, Settings, load_settings


@click.group("config")
def config_group() -> None:
    """Configuration: check a file."""


def summary(settings: Settings) -> str:
    redis = settings.redis.describe()
    broker = maybe_sanitize_url(settings.broker.url) if settings.broker.url else "the Redis above"
    apps = ", ".join(a.id for a in settings.apps) or "none (`clarion up` makes a demo app)"
    tls = lambda on: "https" if on else "http"  # noqa: E731
    return "\n".join([
        f"  redis      {redis}",
        f"  broker     {broker}",
        f"  api        {tls(settings.api.tls)}://{settings.api.host}:{settings.api.port}",
        f"  websocket  {settings.websocket.host}:{settings.websocket.port}",
        f"  apps       {apps}",
    ])


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE (and the CLARION_* environment) without starting anything."""
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(2) from None
    click.echo(f"{file}: ok\n{summary(settings)}")
