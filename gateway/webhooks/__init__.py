"""Webhooks: what the WebSocket nodes report (reporter.py), the Redis scripts that judge
transitions cluster-wide (scripts.py), delivery records (store.py), the SSRF guard (ssrf.py)
and the operator HTTP API (api.py). Delivery itself runs in workers/webhooks.

The path of a webhook:

1. A node calls the :class:`~gateway.webhooks.reporter.Reporter` at the edge. Occupancy and
   presence go through Lua scripts that keep the cluster-wide state and the last state
   *reported*; channel_occupied, member_added, client_event and cache_miss are appended to
   the stream ``P wh:events`` at once, channel_vacated / member_removed / subscription_count
   are recorded in ``P wh:due`` and appended when they come due if still true.
2. One webhooks worker at a time (the leader, workers/webhooks/leader.py) reads the stream,
   batches per endpoint, writes delivery records and acknowledges the stream entries in one
   script, then enqueues ``clarion.webhooks.deliver(delivery_id)``; it also moves due
   transitions and due retries.
3. ``clarion.webhooks.deliver`` signs and POSTs (workers/webhooks/delivery.py) and records
   the attempt: delivered, retried later (``P wh:retry``), or dead.
"""
