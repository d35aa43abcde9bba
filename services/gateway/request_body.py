"""Reading a request body with a bound: a caller cannot make the gateway buffer more than it allows."""

from __future__ import annotations

from starlette.requests import Request


def declared_body_size(request: Request, limit: int) -> int:
    """The Content-Length the caller declared (0 when none; past ``limit`` when unreadable)."""
    try:
        return int(request.headers.get("content-length", "0"))
    except ValueError:
        return limit + 1


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it is (or is declared) larger than ``limit``."""
    if declared_body_size(request, limit) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
