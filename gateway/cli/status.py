"""``clarion status``: what the `clarion up` running with this data dir serves, and its
processes as they are now (a restarted component has a new pid). Exit 0 when one runs, 3 when
none does (like ``systemctl status``), so scripts can wait for it."""

from __future__ import annotations

import json
from pathlib import Path

import click
import psutil

from gateway.cli.common import cli_settings
from gateway.cli.runtime import read_runtime, starting

NOT_RUNNING = 3


def _children(pid: int) -> list[dict[str, object]]:
    """The supervisor's direct children: the components, and the embedded redis-server."""
    out = []
    for child in psutil.Process(pid).children():
        try:
            argv = child.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        command = argv[argv.index("gateway.cli") + 1:] if "gateway.cli" in argv else argv[:1]
        out.append({"pid": child.pid, "command": " ".join(command)})
    return out


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running `clarion up` of this data dir: addresses, Redis, processes."""
    data_dir = Path(cli_settings(ctx).data_dir).resolve()
    runtime = read_runtime(data_dir)
    if runtime is None:
        click.echo(f"the `clarion up` using {data_dir} is still starting" if starting(data_dir)
                   else f"no `clarion up` is running with data dir {data_dir}", err=True)
        ctx.exit(NOT_RUNNING)
    processes = _children(runtime.pid)
    if as_json:
        click.echo(json.dumps({"pid": runtime.pid, "api_url": runtime.api_url,
                               "ws_url": runtime.ws_url, "redis_url": runtime.redis_url,
                               "demo_app_id": runtime.demo_app_id, "processes": processes},
                              indent=2))
        return
    click.echo(f"clarion up (pid {runtime.pid}), data dir {data_dir}")
    click.echo(f"  WebSocket  {runtime.ws_url}\n  HTTP API   {runtime.api_url}\n"
               f"  Redis      {runtime.redis_url}"
               + ("   (embedded)" if runtime.embedded_redis else ""))
    for p in processes:
        click.echo(f"  pid {p['pid']:<8} {p['command']}")
