"""The `clarion` command: run one component in the foreground, or all of them with `clarion up`.

    clarion [--config FILE] ws [--processes N]
    clarion [--config FILE] api
    clarion [--config FILE] worker [--queues live,push,webhooks] [--concurrency N] [--pool P]
    clarion [--config FILE] up [--redis-port PORT]
    clarion [--config FILE] webhooks list|show|replay|endpoints|enable ...
    clarion version

Settings come from ``--config FILE`` (else ``CLARION_CONFIG``), then ``CLARION_*`` variables
(config/settings.py). A bad configuration is reported with the offending key and exit code 2.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from config import Settings
from gateway import processes
from gateway.cli_common import cli_settings, store_redis
from gateway.dashboard.local import banner_lines as dashboard_banner_lines
from gateway.dashboard.local import with_local_token
from gateway.embedded_redis import EmbeddedRedisError, free_port
from gateway.processes import Child, ChildDied, SessionRedis, Supervisor, probe_host
from workers.groups import worker_commands

QUEUES = ("live", "push", "webhooks")
DEMO_APP_FILE = "demo-app.json"
PUSHER_JS_VERSION = "8.4.0"


def _version() -> str:
    try:
        return metadata.version("clarion")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file (default: $CLARION_CONFIG, else built-in defaults).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Clarion: a self-hosted Pusher Channels (protocol 7) gateway."""
    ctx.ensure_object(dict)["config_path"] = config_path


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"clarion {_version()}")


# --------------------------------------------------------------------------- ws


@main.command()
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Node processes sharing the port with SO_REUSEPORT (default: websocket.processes).",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT.")
@click.pass_context
def ws(ctx: click.Context, processes: int | None, reuse_port: bool) -> None:
    """Run the WebSocket node (one process per core with --processes)."""
    settings = cli_settings(ctx)
    count = processes or settings.websocket.processes
    if count == 1:
        from gateway.ws.node import run_node

        ctx.exit(run_node(settings, reuse_port=reuse_port) or 0)
    # N processes on one port: each child binds with SO_REUSEPORT and the kernel spreads the
    # connections. This process only supervises them.
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    for i in range(count):
        supervisor.add(
            Child.cli(f"ws[{i}]", settings, "ws", "--processes", "1", "--reuse-port")
        )
    dead = supervisor.watch()
    if dead is not None:
        click.echo(f"clarion ws: {dead.name} keeps dying ({dead.describe_exit()}); "
                   "stopping the other processes", err=True)
    supervisor.stop_all(timeout=settings.websocket.shutdown_grace + 10)
    ctx.exit(1 if dead is not None else 0)


# --------------------------------------------------------------------------- api


@main.command()
@click.pass_context
def api(ctx: click.Context) -> None:
    """Run the HTTP API (Pusher REST, Beams, health, metrics)."""
    settings = cli_settings(ctx)
    from gateway.api.server import run_api

    run_api(settings)


# --------------------------------------------------------------------------- worker


def _parse_queues(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise click.BadParameter(
            f"{', '.join(unknown) or 'none given'}; choose from {', '.join(QUEUES)}"
        )
    return queues


@main.command()
@click.option(
    "--queues",
    default=",".join(QUEUES),
    show_default=True,
    callback=_parse_queues,
    help="Comma-separated queues to consume.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Pool processes or threads (default: the worker.groups entry with exactly these "
    "queues, else worker.concurrency).",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Celery execution pool (default: the worker.groups entry with exactly these queues, "
    "else worker.pool, prefork). prefork survives a task killing its process; threads suits "
    "I/O-bound deliveries (webhooks, push) and saves the hand-off to a pool process.",
)
@click.pass_context
def worker(
    ctx: click.Context, queues: list[str], concurrency: int | None, pool: str | None
) -> None:
    """Run a Celery worker (live delivery is best kept apart from push and webhooks:
    `--queues live` in one worker, `--queues push,webhooks` in another)."""
    settings = cli_settings(ctx)
    group = settings.worker.group_for(queues)
    if group is not None:  # the queues of one of `clarion up`'s workers: run it as that one
        worker = settings.worker
        settings = settings.with_overrides(worker={"concurrency": worker.concurrency_of(group),
                                                   "pool": worker.pool_of(group)})
    from workers.main import run_worker

    ctx.exit(run_worker(settings, queues, concurrency or settings.worker.concurrency,
                        pool or settings.worker.pool))


# --------------------------------------------------------------------------- webhooks


@main.group()
def webhooks() -> None:
    """Webhook deliveries: list, show attempts, replay; endpoints: list, enable."""


def _webhook_store(ctx: click.Context, app_id: str | None) -> tuple[Any, str]:
    from gateway.state.apps import AppStore
    from gateway.state.keys import Keys
    from gateway.webhooks.store import Store

    client, settings = store_redis(ctx, "webhook deliveries live in Redis")
    keys = Keys(settings.redis.key_prefix)
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


# --------------------------------------------------------------------------- up


def demo_app(data_dir: Path) -> dict[str, str]:
    """The demo app of `clarion up`: made once, then read back so clients keep working."""
    path = data_dir / DEMO_APP_FILE
    if path.exists():
        try:
            app = json.loads(path.read_text())
            if all(isinstance(app.get(k), str) and app[k] for k in ("id", "key", "secret")):
                return {k: app[k] for k in ("id", "key", "secret")}
        except ValueError:
            pass
        raise click.ClickException(
            f"{path} is not a valid demo app file; delete it to make a new one"
        )
    app = {"id": "1", "key": secrets.token_hex(10), "secret": secrets.token_hex(20)}
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(app, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return app


def _redis_port(requested: int | None) -> int:
    if requested:
        return requested
    # The usual port when it is free (a stable URL across runs), else any free port.
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 6379))
        return 6379
    except OSError:
        return free_port()


def banner(settings: Settings, app: Any, redis_url: str, embedded: bool) -> str:
    ws_host = probe_host(settings.websocket.host)
    ws_port = settings.websocket.port
    api_host = probe_host(settings.api.host)
    api_url = f"http://{api_host}:{settings.api.port}"
    n = settings.websocket.processes
    processes = f"{n} process{'es' if n > 1 else ''}"
    where = f"   (embedded, data in {Path(settings.data_dir) / 'redis'})" if embedded else ""
    lines = [
        "",
        "Clarion is up.",
        "",
        f"  WebSocket   ws://{ws_host}:{ws_port}/app/{app.key}   ({processes})",
        f"  HTTP API    {api_url}   (Pusher REST: {api_url}/apps/{app.id}/events)",
        f"  Redis       {redis_url}{where}",
        "",
        f"  App id      {app.id}",
        f"  App key     {app.key}",
        f"  App secret  {app.secret}",
        "",
        *dashboard_banner_lines(settings, api_url),
        "  pusher-js:",
        f"    const pusher = new Pusher('{app.key}', {{",
        f"      wsHost: '{ws_host}', wsPort: {ws_port}, forceTLS: false,",
        "      enabledTransports: ['ws'], cluster: 'mt1', disableStats: true,",
        "    });",
        "",
        "  Server SDK (Python):",
        f"    pusher.Pusher(app_id='{app.id}', key='{app.key}', secret='{app.secret}',",
        f"                  host='{api_host}', port={settings.api.port}, ssl=False)",
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


@main.command()
@click.option(
    "--redis-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the embedded Redis (default: 6379 if free, else a free port).",
)
@click.option("--ready-timeout", type=float, default=60.0, show_default=True, hidden=True)
@click.pass_context
def up(ctx: click.Context, redis_port: int | None, ready_timeout: float) -> None:
    """Run everything on this host: Redis (embedded unless configured), API, WebSocket node(s)
    and workers; a component that dies is restarted (with backoff; given up on, and everything
    stopped, if it keeps dying)."""
    settings = cli_settings(ctx)
    # Absolute: redis-server changes into --dir before it opens its log file.
    data_dir = Path(settings.data_dir).resolve()
    supervisor = Supervisor()
    # Installed first: a Ctrl-C during start-up still stops whatever was started.
    supervisor.install_signal_handlers()
    redis_server: SessionRedis | None = None
    exit_code = 0
    try:
        if settings.redis.url is None:
            redis_server = SessionRedis(
                data_dir / "redis",
                port=_redis_port(redis_port),
                binary=settings.redis.server_binary,
            )
            redis_server.start()
            supervisor.keep_alive(redis_server)
            settings = settings.with_overrides(redis={"url": redis_server.url})
        if not settings.apps:
            settings = settings.with_overrides(apps=[demo_app(data_dir)])
        settings = with_local_token(settings, data_dir)
        api_child = supervisor.add(Child.cli("api", settings, "api"))
        ws_child = supervisor.add(
            Child.cli("ws", settings, "ws", "--processes", str(settings.websocket.processes))
        )
        worker_children = [
            supervisor.add(Child.cli(name, settings, *args))
            for name, args in worker_commands(settings)
        ]
        ws_ready = f"http://{probe_host(settings.websocket.host)}:{settings.websocket.port}/ready"
        api_ready = f"http://{probe_host(settings.api.host)}:{settings.api.port}/ready"
        stopping = lambda: supervisor.stopping  # noqa: E731
        for url, child in ((api_ready, api_child), (ws_ready, ws_child)):
            processes.wait_http_ready(url, child, ready_timeout, cancelled=stopping)
        processes.wait_workers_ready(settings, worker_children, ready_timeout, cancelled=stopping)
        if not supervisor.stopping:
            embedded = redis_server is not None
            click.echo(banner(settings, settings.apps[0], settings.redis.url or "", embedded))
            dead = supervisor.watch()
            if dead is not None:
                policy = supervisor.policy
                click.echo(f"clarion up: {dead.name} died {policy.max_failures} times within "
                           f"{policy.window:g} s ({dead.describe_exit()}); giving up, "
                           "shutting down", err=True)
                exit_code = 1
    except ChildDied as exc:
        click.echo(
            f"clarion up: {exc.child.describe_exit()} while starting; shutting down", err=True
        )
        exit_code = 1
    except (TimeoutError, EmbeddedRedisError) as exc:
        click.echo(f"clarion up: {exc}; shutting down", err=True)
        exit_code = 1
    finally:
        # Ignore further Ctrl-C while stopping: a second one must not leave orphans.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop_all(timeout=settings.websocket.shutdown_grace + 10)
        if redis_server is not None:
            redis_server.stop()
    if exit_code == 0:
        click.echo("clarion up: stopped", err=True)
    ctx.exit(exit_code)

from gateway.cli_push import push; main.add_command(push)  # noqa: E402, E702, I001
from gateway.cli_apps import apps; main.add_command(apps)  # noqa: E402, E702, I001


if __name__ == "__main__":  # `python -m gateway.cli`, used for child processes
    sys.exit(main())
