"""``clarion api``: the Flask app under gunicorn (gthread workers), started programmatically.

gunicorn's own signal handling applies: SIGTERM is a graceful shutdown (workers finish the
requests in flight, up to ``graceful_timeout``), SIGINT/SIGQUIT a quick one, SIGHUP reloads.
Each worker process builds its own app (no preload), hence its own Redis client and Celery
producer pool: nothing opened before the fork is shared.

With ``api.tls_cert_file`` and ``api.tls_key_file`` set, the port serves HTTPS only (gunicorn's
``certfile``/``keyfile``); the official Beams server SDK needs that, as it always uses https.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from config.settings import Settings


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
        "graceful_timeout": 20,
        "keepalive": 5,
        "proc_name": "clarion-api",
        "loglevel": settings.log_level,
        "accesslog": None,
        "errorlog": "-",
        # Do not let gunicorn read a gunicorn.conf.py or GUNICORN_CMD_ARGS from the cwd/env.
        "config": None,
    }
    if api.tls_cert_file and api.tls_key_file:
        # HTTPS on the same port (no plain-HTTP listener then). gunicorn loads the pair in each
        # worker; the settings already checked that both files exist.
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
        from gateway.api.app import create_app

        return create_app(self.settings)


def run_api(settings: Settings) -> None:
    """Serve the API in the foreground until SIGTERM/SIGINT."""
    ClarionGunicorn(settings).run()
