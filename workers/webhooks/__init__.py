"""Webhook delivery workers: the ``clarion.webhooks.deliver`` task (tasks.py, delivery.py)
and the leader thread that batches reported events and schedules retries (leader.py)."""
