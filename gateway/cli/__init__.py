"""The `clarion` command, one module per command group: main.py (the root group and the
commands that run components: ws, api, worker, up), apps.py, webhooks.py, push.py, config.py,
status.py; common.py holds what they share, runtime.py what `clarion up` tells the others."""

from gateway.cli.main import main

__all__ = ["main"]
