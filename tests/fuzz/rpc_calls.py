"""Calling an RPC from a worker thread and judging the status it answered with.

The servers run on the test's event loop; hypothesis drives a *sync* gRPC
channel from a worker thread (``asyncio.to_thread``), so the loop keeps
serving while examples are generated and shrunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from services.common.errors import RETRY_AFTER_METADATA_KEY
from services.common.grpc_server import MAX_STATUS_MESSAGE_CHARS

# Statuses a service chooses on purpose. UNKNOWN (an escaped exception), INTERNAL
# (an unexpected one caught by grpc_server) and DEADLINE_EXCEEDED (a hang) are bugs.
DELIBERATE = frozenset({
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
})
CALL_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    response: Message | None = None
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass
class StatusTally:
    """How often each status was seen: the report printed at the end of a fuzz run."""

    counts: dict[str, int] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.code.name] = self.counts.get(outcome.code.name, 0) + 1
        if outcome.details:
            self.reasons[outcome.details[:45]] += 1


def call(method: Callable[..., Message], request: Message) -> Outcome:
    try:
        response = method(request, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", None, tuple(error.trailing_metadata() or ()))
    return Outcome(grpc.StatusCode.OK, "", response)


def assert_deliberate(outcome: Outcome, request: Message) -> None:
    shown = str(request)[:500]
    assert outcome.code in DELIBERATE, f"{outcome.code.name}: {outcome.details!r} for request:\n{shown}"
    if outcome.code is not grpc.StatusCode.OK:
        assert outcome.details.strip(), f"{outcome.code.name} without a message for request:\n{shown}"
        assert "Traceback" not in outcome.details
        assert len(outcome.details) <= MAX_STATUS_MESSAGE_CHARS
    if outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        # A deliberate one is a rate limit saying when to retry; without the trailer it came
        # from the transport (e.g. an oversized status message), not from the service.
        keys = {key for key, _ in outcome.trailers}
        assert RETRY_AFTER_METADATA_KEY in keys, f"transport RESOURCE_EXHAUSTED {outcome.details!r}:\n{shown}"
