"""Requests signed by the official SDK's own code but sent raw, for what the SDK refuses to
send (more than 100 channels, oversized batches) or to send at another time (an expired
timestamp). The response comes back whole (status and JSON body)."""

from __future__ import annotations

from typing import Any

import pusher
import requests
from pusher.http import Request, make_query_string
from pusher.signature import sign


def signed_request(
    sdk: pusher.Pusher,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    timestamp: int | None = None,
    body: bytes | None = None,
) -> requests.Response:
    client = sdk._pusher_client
    req = Request(client, method, path, params or {})
    if body is not None:
        # A body the SDK would not produce (malformed JSON): sign it the SDK's way anyway.
        req.body = body
        req.query_params = {}
        req._generate_auth()
    if timestamp is not None:
        query = {k: v for k, v in req.query_params.items() if k != "auth_signature"}
        query["auth_timestamp"] = str(timestamp)
        to_sign = f"{method}\n{path}\n{make_query_string(query)}"
        query["auth_signature"] = sign(client.secret, to_sign)
        req.query_params = query
    return requests.request(
        method, req.url, data=req.body, headers={"Content-Type": "application/json"}, timeout=10
    )
