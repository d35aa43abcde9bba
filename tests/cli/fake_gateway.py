"""A local HTTP server standing in for the gateway's /api/cron/run-bots and /api/status routes."""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = "cron-secret-for-cli-tests"
STATUS_TOKEN = "status-token-for-cli-tests"   # /api/status has its own token, as the real gateway

TICK_BODY: dict[str, Any] = {
    "success": True,
    "timestamp": "2026-11-25T12:00:00Z",
    "summary": {"totalBots": 2, "successful": 1, "failed": 1, "withPositions": 1, "skipped": 0},
    "results": [
        {"botInstanceId": "6b06fc21fab189c274ec5b31", "botName": "Bitcoin Pro", "symbol": "BTCUSDT",
         "status": "success", "action": "BUY", "confidence": 82.5, "orderPlaced": True, "hasPosition": True,
         "error": None},
        {"botInstanceId": "6b06fc22c5c028545502c77e", "botName": "Safe Trader", "symbol": "ETHUSDT",
         "status": "failed", "action": None, "confidence": None, "orderPlaced": False, "hasPosition": False,
         "error": "credentials could not be decrypted"},
    ],
}

STATUS_BODY: dict[str, Any] = {
    "generatedAt": "2026-11-25T12:01:00Z",
    "botsByStatus": {"ACTIVE": 7, "PAUSED": 1},
    "openPositions": [],
    "realizedPnlToday": [],
    "tradeLogsLast24h": {"ANALYSIS": 40, "ERROR": 2, "CRITICAL": 0},
    "lastTick": {"at": "2026-11-25T12:00:00Z", "outcome": "partial"},
}


def _authorized(request: Request, secret: str = SECRET) -> bool:
    return hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {secret}")


async def _run_bots(request: Request) -> JSONResponse:
    if not _authorized(request):
        return JSONResponse({"success": False, "error": "Unauthorized"}, status_code=401)
    await asyncio.sleep(0.3)  # a tick takes a while: the CLI shows progress meanwhile
    return JSONResponse(TICK_BODY)


async def _status(request: Request) -> JSONResponse:
    if not _authorized(request, STATUS_TOKEN):
        return JSONResponse({"success": False, "error": "Unauthorized"}, status_code=401)
    return JSONResponse(STATUS_BODY)


@contextmanager
def fake_gateway() -> Iterator[str]:
    app = Starlette(routes=[Route("/api/cron/run-bots", _run_bots, methods=["GET", "POST"]),
                            Route("/api/status", _status, methods=["GET"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
