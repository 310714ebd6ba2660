"""The `clarion` command, one module per command group: main.py (the root group and the
commands that run components: ws, api, worker, up), apps.py, push.py; common.py holds what they
share."""

from gateway.cli.main import main

__all__ = ["main"]
