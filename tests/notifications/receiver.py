"""Local webhook receivers: one on starlette/uvicorn that checks signatures like a real user's would,
and a raw asyncio one for answers no well-behaved server gives (gzip bombs, trickled bodies)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.notifications.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@dataclass
class Delivery:
    path: str
    body: bytes
    headers: dict[str, str]
    signature_valid: bool


@dataclass
class Receiver:
    """``script[path]`` lists the status codes to answer, one per request (then 200)."""

    secrets: dict[str, str] = field(default_factory=dict)   # path -> signing secret
    script: dict[str, list[int]] = field(default_factory=dict)
    hang_paths: set[str] = field(default_factory=set)
    redirects: dict[str, str] = field(default_factory=dict)   # path -> Location of a 302
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def for_path(self, path: str) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Delivery]:
        async def reached() -> None:
            while len(self.for_path(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(reached(), timeout)
        return self.for_path(path)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        secret = self.secrets.get(path, "")
        valid = verify_signature(
            secret,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            tolerance=60,
        )
        self.deliveries.append(Delivery(path, body, dict(request.headers), valid))
        self.arrived.set()
        if path in self.hang_paths:
            await self.release.wait()
        if not valid:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        if path in self.redirects:
            return RedirectResponse(self.redirects[path], status_code=302)
        codes = self.script.get(path, [])
        status = codes.pop(0) if codes else 200
        return JSONResponse({"ok": status < 400}, status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{hook:path}", self._handle, methods=["POST"])])


async def start_receiver(receiver: Receiver, **config: Any) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """``config``: more uvicorn.Config options, e.g. ssl_certfile and ssl_keyfile for https."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver.app(), log_level="warning", lifespan="off", **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawReceiver:
    """A bare TCP server on 127.0.0.1: reads one HTTP request, then lets ``answer`` write whatever it likes.

    Counts connections and requests, so a test can tell that nothing arrived at all.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.port = 0
        self.finished = asyncio.Event()   # a handler ended (the client closed, or the answer is done)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.requests += 1
            await self.answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: that is what the tests want to see
        finally:
            writer.close()
            self._handlers.discard(task)
            self.finished.set()
