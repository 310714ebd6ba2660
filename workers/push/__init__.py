"""Beams delivery on the ``push`` queue (task module: ``workers.push.tasks``)."""
