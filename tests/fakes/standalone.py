"""Running a fake server as its own process (``python -m tests.fakes.<name>``) for e2e tests and the benchmark."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def serve_until_stopped(start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start, print ``READY <url>`` for the launcher that waits on it, serve until cancelled, stop."""
    url = await start()
    print(f"READY {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await stop()
