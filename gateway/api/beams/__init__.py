"""The Pusher Beams API: device, publish and customer endpoints, as Beams serves them.

Wire it into the Flask app with :func:`register` (after ``app.extensions["clarion"]`` exists,
to share its Redis client and Celery app; a bare Flask app works too)::

    from gateway.api import beams
    beams.register(app, settings)

Paths (``{id}`` is the Beams instance id, which is the app id):

- ``/device_api/v1/instances/{id}/devices/{fcm|apns}`` … (no auth: the device id is the
  capability; ``PUT …/user`` takes a Beams JWT signed with the secret key)
- ``/publish_api/v1/instances/{id}/publishes/{interests|users}`` (``Bearer`` secret key),
  ``GET /publish_api/v1/instances/{id}/publishes/{publishId}`` (status, Clarion's addition)
- ``/customer_api/v1/instances/{id}/users/{user}`` (``DELETE``, ``Bearer`` secret key)

The secret key is ``apps[].push.beams_secret_key``, else the app secret. Instances are the
apps of the app resolver (config overlaid by ``clarion apps``' Redis store,
gateway/state/apps.py), the one the Channels REST API uses: an app added, a secret rotated,
credentials changed or an app disabled apply within a second; a disabled app's instance
answers 403. Every refusal is ``{"error": title, "description": text}`` with the status
Beams uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app

from config.settings import Settings
from gateway.api.beams.common import BeamsError, bp
from gateway.state.apps import AppResolver
from gateway.state.devices import DeviceStore
from gateway.state.keys import Keys
from gateway.state.publishes import PublishStore
from gateway.state.redis_client import sync_client

__all__ = ["BeamsContext", "BeamsError", "bp", "register", "beams_ctx"]


@dataclass(slots=True)
class BeamsContext:
    settings: Settings
    redis: redis.Redis
    devices: DeviceStore
    publishes: PublishStore
    celery: object  # celery.Celery: only send_task is used
    apps: AppResolver


def register(app: Flask, settings: Settings) -> None:
    """Register the Beams blueprint on ``app``, reusing ``app.extensions["clarion"]`` if set."""
    shared = app.extensions.get("clarion")
    client = getattr(shared, "redis", None)
    celery = getattr(shared, "celery", None)
    apps = getattr(shared, "apps", None)
    if client is None:
        client = sync_client(settings.redis, "the Beams API", socket_connect_timeout=2,
                             socket_timeout=5, health_check_interval=30)
    if celery is None:
        from workers.celery_app import create_celery

        celery = create_celery(settings)
    prefix = settings.redis.key_prefix
    if apps is None:
        apps = AppResolver(settings, client, Keys.of(settings.redis))
    app.extensions["clarion_beams"] = BeamsContext(
        settings=settings,
        redis=client,
        devices=DeviceStore(client, prefix),
        publishes=PublishStore(client, prefix, settings.push.status_ttl),
        celery=celery,
        apps=apps,
    )
    # Importing the route modules attaches their views to the blueprint.
    from gateway.api.beams import devices, publish  # noqa: F401

    app.register_blueprint(bp)


def beams_ctx() -> BeamsContext:
    return current_app.extensions["clarion_beams"]  # type: ignore[no-any-return]
