"""``clarion api``: the Flask app under granian (default) or gunicorn, started programmatically.

granian (a Rust HTTP server) is the default: on this project's publish benchmark it spends
about 30 % less CPU per request than gunicorn's gthread workers serving the same Flask app
(bench/results/SUMMARY.md), and CPU per request is what bounds how many events the API
accepts on a small machine. With ``api.buffer_bodies`` (the default) it serves the app through
its RSGI interface and gateway/api/rsgi_bridge.py, which reads each request body asynchronously
under a size cap and a deadline (``api.body_timeout``) before the app runs, so slow clients
hold no thread; without, through its WSGI interface on ``api.threads`` threads, which costs
less CPU but leaves slow clients to a proxy in front (docs/api-server.md). ``api.server =
"gunicorn"`` keeps gunicorn for deployments built around it; it is not protected either.

Both: ``api.workers`` processes, SIGTERM and SIGINT stop gracefully. Each worker process builds
its own app after the fork (no preload), hence its own Redis client: nothing opened before the
fork is shared. With ``api.tls_cert_file`` and ``api.tls_key_file`` set, the port serves HTTPS
only; the official Beams server SDK needs that, as it always uses https.
"""

from __future__ import annotations

import contextlib
import resource
from functools import partial
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from config.settings import Settings
from gateway.logs import configure as configure_logs
from gateway.logs import dict_config

# Seconds a stopping API gives its workers before killing them. API requests take
# milliseconds; what lingers is connections that will never finish a request (plain HTTP sent
# to the HTTPS port kept granian's workers for its whole 20 s), so a stop stays under 5 s.
STOP_GRACE = 3


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    api = settings.api
    options: dict[str, Any] = {
        "bind": [bind_address(api.host, api.port)],
        "workers": api.workers,
        "threads": api.threads,
        "worker_class": "gthread",
        "preload_app": False,
        "timeout": 30,
        "graceful_timeout": STOP_GRACE,
        "keepalive": 5,
        "proc_name": "clarion-api",
        "loglevel": settings.log_level,
        "logconfig_dict": dict_config(settings.log_level, settings.log_format),
        "accesslog": None,
        "errorlog": "-",
        # Do not let gunicorn read a gunicorn.conf.py or GUNICORN_CMD_ARGS from the cwd/env.
        "config": None,
    }
    if api.tls_cert_file and api.tls_key_file:
        options["certfile"] = api.tls_cert_file
        options["keyfile"] = api.tls_key_file
    return options


class ClarionGunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:  # pragma: no cover - unused
        return None

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return _load_app(self.settings)


def _load_app(settings: Settings, *_: Any) -> Any:
    from gateway.api.app import create_app

    configure_logs(settings.log_level, settings.log_format)  # in each worker process

    return create_app(settings)


def _load_bridge(settings: Settings, *_: Any) -> Any:
    from gateway.api.rsgi_bridge import RsgiBridge

    return RsgiBridge(_load_app(settings), max_body_bytes=settings.api.max_body_bytes,
                      body_timeout=settings.api.body_timeout)


def granian_server(settings: Settings) -> Any:
    from granian.constants import SSLProtocols
    from granian.server import Server

    api = settings.api
    tls: dict[str, Any] = {}
    if api.tls_cert_file and api.tls_key_file:
        # TLS 1.2 and up: granian's default floor is 1.3, which older SDK runtimes lack.
        tls = {"ssl_cert": Path(api.tls_cert_file), "ssl_key": Path(api.tls_key_file),
               "ssl_protocol_min": SSLProtocols.tls12}
    return Server(
        "clarion.api",  # a name for the logs: the app comes from the loader below
        address=api.host,
        port=api.port,
        workers=api.workers,
        runtime_threads=1,
        # Connections a worker serves at once. granian's default (1,024 over the workers)
        # counts idle and slow connections too, so a thousand of them would lock others out.
        backpressure=api.connections_per_worker,
        log_level=_granian_level(settings.log_level),
        log_dictconfig=dict_config(settings.log_level, settings.log_format),
        log_access=False,
        websockets=False,
        workers_kill_timeout=STOP_GRACE,
        **_granian_interface(settings),
        **tls,
    )


def _granian_interface(settings: Settings) -> dict[str, Any]:
    from granian.constants import Interfaces, TaskImpl

    if not settings.api.buffer_bodies:
        return {"interface": Interfaces.WSGI, "blocking_threads": settings.api.threads}
    return {
        "interface": Interfaces.RSGI,
        # RSGI takes one; the app itself runs on the worker's event loop thread.
        "blocking_threads": 1,
        # asyncio tasks, not granian's Rust ones: the body deadline cancels a request's task.
        "task_impl": TaskImpl.asyncio,
    }


def _granian_level(level: str) -> Any:
    from granian.log import LogLevels

    name = level.lower()
    return LogLevels(name if name in {"critical", "error", "warning", "info", "debug"}
                     else "info")


def run_api(settings: Settings) -> None:
    """Serve the API in the foreground until SIGTERM/SIGINT."""
    _raise_open_files_limit()
    if settings.api.server == "gunicorn":
        ClarionGunicorn(settings).run()
        return
    loader = _load_bridge if settings.api.buffer_bodies else _load_app
    granian_server(settings).serve(target_loader=partial(loader, settings), wrap_loader=False)


def _raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: each connection is a descriptor, and the usual
    soft limit (1,024) is below ``api.connections_per_worker``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # e.g. an unlimited hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
