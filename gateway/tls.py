"""TLS for the ports Clarion serves itself (the WebSocket node; the API's server, granian or
gunicorn, loads the same files on its own)."""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for a PEM certificate chain and key: TLS 1.2 and up (older SDK
    runtimes lack 1.3), HTTP/1.1 only (WebSockets and pusher-js's fallback need it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context
