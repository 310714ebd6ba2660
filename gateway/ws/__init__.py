"""The WebSocket node (``clarion ws``): Pusher protocol 7 over picows, fed by the Redis bus.

    node.py        lifecycle, registry heartbeats and sweeps, liveness, graceful shutdown
    server.py      the picows listener factory: /app/{key}, /ready, refusals
    connection.py  one client: parse, sequence, authorise (gateway.channels), reply
    hub.py         local subscriptions and the fan-out hot path (frames built once, coalesced)
    bus.py         bus listener, per-channel serial ordering and gap filling, publisher
    topics.py      the bus topics the node listens to: control, and one per local channel
    occupancy.py   keeps this node's occupancy hash in step with local counts
    framing.py     raw server WebSocket frames
    context.py     what connections share (settings, hub, presence, publisher)
"""
