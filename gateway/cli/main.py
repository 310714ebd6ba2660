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
from importlib import metadata
from pathlib import Path
from typing import Any

import click
from kombu.utils.url import maybe_sanitize_url

from config import Settings
from gateway import processes
from gateway.cli.common import cli_settings
from gateway.cli.runtime import (
    AlreadyRunning,
    InstanceLock,
    Runtime,
    foreign_listeners,
    port_in_use,
    remove_runtime,
)
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
    supervisor.stop_all(timeout=settings.websocket.drain_timeout + 10)
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
    api_url = api_base_url(settings)
    tls = settings.websocket.tls
    ports = f"wssPort: {ws_port}, forceTLS: true" if tls else f"wsPort: {ws_port}, forceTLS: false"
    n = settings.websocket.processes
    processes = f"{n} process{'es' if n > 1 else ''}"
    where = f"   (embedded, data in {Path(settings.data_dir) / 'redis'})" if embedded else ""
    lines = [
        "",
        "Clarion is up.",
        "",
        f"  WebSocket   {ws_base_url(settings)}/app/{app.key}   ({processes})",
        f"  HTTP API    {api_url}   (Pusher REST: {api_url}/apps/{app.id}/events)",
        f"  Redis       {redis_url}{where}",
        *([f"  Broker      {maybe_sanitize_url(settings.broker.url)}"]
          if settings.broker.url else []),
        "",
        f"  App id      {app.id}",
        f"  App key     {app.key}",
        f"  App secret  {app.secret}",
        "",
        *dashboard_banner_lines(settings, api_url),
        "  pusher-js:",
        f"    const pusher = new Pusher('{app.key}', {{",
        f"      wsHost: '{ws_host}', {ports},",
        "      enabledTransports: ['ws'], cluster: 'mt1',",
        "      channelAuthorization: { endpoint: '/pusher/auth' },  // your backend's",
        "    });",
        "",
        "  Server SDK (Python):",
        f"    pusher.Pusher(app_id='{app.id}', key='{app.key}', secret='{app.secret}',",
        f"                  host='{api_host}', port={settings.api.port}, ssl={settings.api.tls})",
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def _claim(ctx: click.Context, settings: Settings, data_dir: Path,
           redis_port: int | None) -> InstanceLock:
    """Lock the data dir and check the ports are free, or end with exit 1 naming the conflict:
    a second instance must not share the ports (SO_REUSEPORT would split the traffic) nor
    the embedded Redis's data."""
    lock = InstanceLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        click.echo(f"clarion up: another `clarion up` (pid {exc}) is running with data dir "
                   f"{data_dir}; stop it first, or give this one its own data_dir "
                   "(CLARION_DATA_DIR)", err=True)
        ctx.exit(1)
    wanted = [("api.port", settings.api.host, settings.api.port),
              ("websocket.port", settings.websocket.host, settings.websocket.port)]
    if redis_port and not settings.redis.configured:
        wanted.append(("--redis-port", "127.0.0.1", redis_port))
    for name, host, port in wanted:
        if port_in_use(host, port):
            lock.release()
            click.echo(f"clarion up: port {port} ({name}) is already in use on {host}, maybe "
                       "by another `clarion up`; stop it, or choose another port", err=True)
            ctx.exit(1)
    return lock


def _shared_port(settings: Settings) -> str | None:
    """Whether another process also listens on our ports (then "up" would be a lie)."""
    import psutil

    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    ports = {"api.port": settings.api.port, "websocket.port": settings.websocket.port}
    listeners = foreign_listeners(ports.values(), ours)
    for name, port in ports.items():
        others = listeners[port]
        if others:
            return (f"port {port} ({name}) is also served by pid "
                    f"{', '.join(map(str, others))}, maybe another `clarion up`")
    return None


def _runtime(settings: Settings, embedded: bool, demo: dict[str, str] | None,
             supervisor: Supervisor) -> Runtime:
    return Runtime(
        pid=os.getpid(),
        redis_url=settings.redis.url or settings.redis.describe(),
        embedded_redis=embedded,
        api_url=api_base_url(settings),
        ws_url=ws_base_url(settings),
        demo_app_id=demo["id"] if demo else None,
        children={c.name: c.pid for c in supervisor.children},
        settings=json.loads(settings.model_dump_json()),
    )


def api_base_url(settings: Settings) -> str:
    scheme = "https" if settings.api.tls else "http"
    return f"{scheme}://{probe_host(settings.api.host)}:{settings.api.port}"


def ws_base_url(settings: Settings) -> str:
    scheme = "wss" if settings.websocket.tls else "ws"
    return f"{scheme}://{probe_host(settings.websocket.host)}:{settings.websocket.port}"


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
    lock = _claim(ctx, settings, data_dir, redis_port)
    supervisor = Supervisor()
    # Installed first: a Ctrl-C during start-up still stops whatever was started.
    supervisor.install_signal_handlers()
    redis_server: SessionRedis | None = None
    exit_code = 0
    try:
        if not settings.redis.configured:
            redis_server = SessionRedis(
                data_dir / "redis",
                port=_redis_port(redis_port),
                binary=settings.redis.server_binary,
            )
            redis_server.start()
            supervisor.keep_alive(redis_server)
            settings = settings.with_overrides(redis={"url": redis_server.url})
        demo = None if settings.apps else demo_app(data_dir)
        if demo is not None:
            settings = settings.with_overrides(apps=[demo])
        settings = with_local_token(settings, data_dir)
        api_child = supervisor.add(Child.cli("api", settings, "api"))
        ws_child = supervisor.add(
            Child.cli("ws", settings, "ws", "--processes", str(settings.websocket.processes))
        )
        worker_children = [
            supervisor.add(Child.cli(name, settings, *args))
            for name, args in worker_commands(settings)
        ]
        ws_scheme = "https" if settings.websocket.tls else "http"
        ws_ready = (f"{ws_scheme}://{probe_host(settings.websocket.host)}:"
                    f"{settings.websocket.port}/ready")
        api_ready = api_base_url(settings) + "/ready"
        stopping = lambda: supervisor.stopping  # noqa: E731
        for url, child in ((api_ready, api_child), (ws_ready, ws_child)):
            processes.wait_http_ready(url, child, ready_timeout, cancelled=stopping)
        processes.wait_workers_ready(settings, worker_children, ready_timeout, cancelled=stopping)
        shared = _shared_port(settings)
        if shared:
            click.echo(f"clarion up: {shared}; shutting down", err=True)
            exit_code = 1
        elif not supervisor.stopping:
            embedded = redis_server is not None
            _runtime(settings, embedded, demo, supervisor).save(data_dir)
            click.echo(banner(settings, settings.apps[0],
                              settings.redis.url or settings.redis.describe(), embedded))
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
        supervisor.stop_all(timeout=settings.websocket.drain_timeout + 10)
        if redis_server is not None:
            redis_server.stop()
        remove_runtime(data_dir)
        lock.release()
    if exit_code == 0:
        click.echo("clarion up: stopped", err=True)
    ctx.exit(exit_code)

from gateway.cli.push import push; main.add_command(push)  # noqa: E402, E702, I001
from gateway.cli.apps import apps; main.add_command(apps)  # noqa: E402, E702, I001
from gateway.cli.webhooks import webhooks; main.add_command(webhooks)  # noqa: E402, E702, I001
from gateway.cli.config import config_group; main.add_command(config_group)  # noqa: E402, E702, I001
from gateway.cli.status import status; main.add_command(status)  # noqa: E402, E702, I001

