"""A local webhook receiver (starlette on uvicorn) that checks signatures like a real user's would."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

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
        codes = self.script.get(path, [])
        status = codes.pop(0) if codes else 200
        return JSONResponse({"ok": status < 400}, status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{hook:path}", self._handle, methods=["POST"])])


async def start_receiver(receiver: Receiver) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver.app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task
