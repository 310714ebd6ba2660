"""pusher-js's HTTP transports (xhr_streaming, xhr_polling) on the node's port, under /pusher.

wire.py: the wire format (pure); http11.py: the HTTP/1.1 connections; session.py: one session,
the transport its Connection writes through; sessions.py: routing, limits, the sweep.
docs/http-fallback.md describes the whole.
"""
