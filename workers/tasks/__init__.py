"""Celery tasks. Each module has ``register(celery_app)``, called by ``create_celery``."""
