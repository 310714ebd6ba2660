"""One log format for every process: the API (and granian's or gunicorn's own lines), the
WebSocket node, the workers (and Celery's own lines).

Everything goes through the standard library's root logger to one handler on stderr whose
formatter is structlog's: our structlog events and the libraries' plain records come out alike,
``log_format = "console"`` (the default) as readable lines, ``"json"`` as one JSON object a line
for a log pipeline:

    2026-12-07T10:26:26.576934Z [info     ] node_started   [clarion.ws.node] port=6001
    {"event": "node_started", "port": 6001, "level": "info", "logger": "clarion.ws.node", ...}
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Loggers of the servers we embed, which do not propagate to the root logger on their own.
SERVER_LOGGERS = ("_granian", "granian.access", "gunicorn.error", "gunicorn.access")


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(fmt: str = "console") -> logging.Formatter:
    """The formatter of every handler (also named by :func:`dict_config` for granian)."""
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def _numeric(level: str) -> int:
    found = logging.getLevelName(level.upper())
    return found if isinstance(found, int) else logging.INFO


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route this process's logs, ours and the libraries', through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_numeric(level))
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = []
        server.propagate = True
    # picows logs every connection and disconnection at info: noise, and a formatted record
    # on each connect. Its warnings and errors still come through; at debug, everything.
    quiet = logging.DEBUG if _numeric(level) <= logging.DEBUG else logging.WARNING
    logging.getLogger("picows").setLevel(quiet)
    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level cost one method call, not a formatted record.
        wrapper_class=structlog.make_filtering_bound_logger(_numeric(level)),
        cache_logger_on_first_use=True,
    )


def dict_config(level: str = "info", fmt: str = "console") -> dict[str, Any]:
    """The same, as a ``logging.config.dictConfig`` for servers that configure logging
    themselves in each of their processes (granian, gunicorn)."""
    upper = logging.getLevelName(_numeric(level))
    handler = {"handlers": ["stderr"], "level": upper, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"clarion": {"()": "gateway.logs.formatter", "fmt": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "clarion",
                                "stream": "ext://sys.stderr"}},
        "loggers": {name: dict(handler) for name in SERVER_LOGGERS},
        "root": {"handlers": ["stderr"], "level": upper},
    }
