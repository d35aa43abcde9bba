"""The project's own errors and their one mapping to gRPC status codes.

Adapters translate vendor exceptions into these at their boundary; servers
let them propagate and ``grpc_server`` maps them to a status in one place.
Nothing else crosses the wire: an unexpected exception becomes INTERNAL with a
generic message, never UNKNOWN with a traceback.
"""

from __future__ import annotations

import grpc


class TradebotError(Exception):
    """Base class. ``retryable`` tells callers whether the next try may succeed."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TradebotError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TradebotError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(TradebotError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(TradebotError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(TradebotError):
    """A conflict with concurrent work (another tick holds the bot); the next attempt may succeed."""

    code = grpc.StatusCode.ABORTED


class Unavailable(TradebotError):
    """A dependency is down or answered 5xx / timed out; try again later."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(TradebotError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class ResourceExhausted(TradebotError):
    """A rate limit or budget; ``retry_after`` seconds until it frees."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


RETRY_AFTER_METADATA_KEY = "retry-after-seconds"
