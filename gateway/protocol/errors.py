"""The one error tree: every refusal Clarion makes, carrying its Pusher code or HTTP status.

    ClarionError
    ├── ConnectionError_        a WebSocket-level refusal: sent as ``pusher:error`` {code, message}
    │   ├── (fatal ones)        ... then the socket is closed with the same 4xxx code
    │   └── (43xx, null code)   ... the socket stays open
    ├── SubscriptionError       a refused ``pusher:subscribe``: ``pusher:subscription_error``
    └── ApiError                a refused HTTP request: status + JSON body {"error", "code"}

Close-code ranges (protocol doc): 4000-4099 do not reconnect, 4100-4199 reconnect after a
back-off, 4200-4299 reconnect at once, 4300+ are errors that do not close the connection.
"""

from __future__ import annotations


class ClarionError(Exception):
    """Base of every error Clarion reports to a client."""

    message = "error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


# --------------------------------------------------------------------------- WebSocket


class ConnectionError_(ClarionError):  # noqa: N801 - the builtin name is taken
    """A ``pusher:error`` frame; ``close`` says whether the socket is then closed with ``code``."""

    code: int | None = None
    close = False


class SslOnly(ConnectionError_):
    code, close, message = 4000, True, "Application only accepts SSL connections"


class AppNotFound(ConnectionError_):
    code, close, message = 4001, True, "Application does not exist"


class AppDisabled(ConnectionError_):
    code, close, message = 4003, True, "Application is disabled"


class OverConnectionQuota(ConnectionError_):
    code, close, message = 4004, True, "Application is over connection quota"


class PathNotFound(ConnectionError_):
    code, close, message = 4005, True, "Path not found"


class InvalidVersion(ConnectionError_):
    code, close, message = 4006, True, "Invalid version string format"


class UnsupportedProtocol(ConnectionError_):
    code, close, message = 4007, True, "Unsupported protocol version"


class NoProtocolVersion(ConnectionError_):
    code, close, message = 4008, True, "No protocol version supplied"


class Unauthorized(ConnectionError_):
    code, close, message = 4009, True, "Connection is unauthorized"


class OverCapacity(ConnectionError_):
    code, close, message = 4100, True, "Over capacity"


class Draining(ConnectionError_):
    # A new connection to a draining node (docs/operations.md, "Draining a node"). In the
    # 4100s, not 4200: pusher-js waits a second before it tries again, instead of bouncing
    # off the node as fast as it can until the balancer (or the node's exit) stops it.
    code, close, message = 4100, True, "Server is shutting down. Please reconnect in a moment."


class ReconnectNow(ConnectionError_):
    code, close, message = 4200, True, "Server is closing. Please reconnect shortly."


class PongTimeout(ConnectionError_):
    code, close, message = 4201, True, "Pong reply not received in time"


class ClientEventRejected(ConnectionError_):
    code, close, message = 4301, False, "Client event rejected"


class WatchlistLimit(ConnectionError_):
    code, close, message = 4302, False, "Watchlist limit exceeded"


class InvalidMessage(ConnectionError_):
    # Real Pusher answers bad input with a null code and keeps the connection: a 42xx code
    # here would make pysher reconnect in a loop on a client bug.
    code, close, message = None, False, "Invalid message format"


class ExistingSubscription(ConnectionError_):
    code, close, message = None, False, "Existing subscription"


# --------------------------------------------------------------------------- subscriptions


class SubscriptionError(ClarionError):
    """``pusher:subscription_error`` on the channel: ``{type, error, status}`` (soketi's shape,
    which pusher-js and Laravel Echo surface to the channel's error handlers)."""

    type = "AuthError"
    status = 401
    message = "The connection is unauthorized."

    def __init__(self, channel: str, message: str | None = None) -> None:
        self.channel = channel
        super().__init__(message)


class SubscriptionAuthError(SubscriptionError):
    type, status, message = "AuthError", 401, "The connection is unauthorized."


class SubscriptionNameError(SubscriptionError):
    type, status = "InvalidChannel", 4009
    message = "The channel name is not allowed."


class SubscriptionLimitReached(SubscriptionError):
    type, status, message = "LimitReached", 4100, "The channel has reached its member limit."


class TooManyChannels(SubscriptionError):
    # No Pusher code exists for this (Pusher sets no per-connection limit): soketi's type for
    # its limits, and the status of Clarion's other "full" refusal (presence members).
    type, status = "LimitReached", 4100

    def __init__(self, channel: str, limit: int) -> None:
        super().__init__(channel, f"A connection can be subscribed to at most {limit} channels: "
                                  "unsubscribe from one first.")


class UserInfoTooLarge(SubscriptionError):
    type, status, message = "LimitReached", 4301, "The user info is too large."


# --------------------------------------------------------------------------- HTTP API


class ApiError(ClarionError):
    """An HTTP refusal: ``status`` and the JSON body ``{"error": message, "code": status}``."""

    status = 400
    message = "Bad request"
    headers: dict[str, str] = {}

    def body(self) -> dict[str, object]:
        return {"error": self.message, "code": self.status}


class BadRequest(ApiError):
    status, message = 400, "Bad request"


class InvalidJson(BadRequest):
    """A request body that is not JSON Clarion takes (gateway/api/jsonbody.py)."""

    message = "The request body is not valid JSON."


class AuthenticationFailed(ApiError):
    status, message = 401, "Authentication failed"


class Forbidden(ApiError):
    status, message = 403, "Forbidden"


class NotFound(ApiError):
    status, message = 404, "Not found"


class IdempotencyKeyReused(ApiError):
    # The IETF draft "The Idempotency-Key HTTP Header Field": 422 for a key reused with a
    # different request (409 is for one still in flight, which Clarion waits for instead).
    status, message = 422, "The idempotency key was used for a different request"


class PayloadTooLarge(ApiError):
    status, message = 413, "Payload too large"


class TooManyRequests(ApiError):
    status, message = 429, "Too many requests"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(ApiError):
    status, message = 503, "Service unavailable"


class RequestTimeout(ApiError):
    # The connection is closed after it: the rest of the body may still be on its way.
    status, message = 408, "Request timeout"
    headers = {"Connection": "close"}
