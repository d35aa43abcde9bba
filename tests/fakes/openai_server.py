"""A local server speaking OpenAI's ``POST /v1/chat/completions``.

The strategy service reaches it through the real ``openai`` SDK by
``OPENAI_BASE_URL``; nothing in the client library is patched. Replies have
the real shapes: ``choices[0].message.content`` as a JSON string,
``message.refusal``, ``finish_reason``, ``usage``, ``{"error": {...}}``
bodies and an ``x-request-id`` header on every response.

Modes (what the next request gets):
  success        agrees with the proposed action (``proposed_action`` in the prompt), confidence 85
  disagreement   answers HOLD, confidence 75
  refusal        ``message.refusal`` set, ``content`` null
  truncated      ``finish_reason: "length"`` with half a JSON document
  malformed      content that is not JSON
  wrong_schema   JSON that does not fit the answer schema
  unauthorized   401 invalid_api_key
  rate_limited   429 with ``retry-after`` / ``retry-after-ms``
  server_error   500 server_error
  slow           answers like success after ``slow_seconds`` (past the client's timeout)

``script`` (a list of modes) is consumed one per request before falling back
to ``mode``, e.g. ``["rate_limited", "success"]`` to see a retry succeed.

In process: ``async with FakeOpenAI(mode="success") as fake: fake.base_url``.
Standalone: ``python -m tests.fakes.openai_server --port N [--mode M]
[--latency-ms L]`` prints ``READY http://127.0.0.1:N/v1``; ``POST /_fake/mode``
(JSON ``{"mode": M}``) switches mode and ``GET /_fake/stats`` returns the
request count from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.standalone import serve_until_stopped

MODES = (
    "success",
    "disagreement",
    "refusal",
    "truncated",
    "malformed",
    "wrong_schema",
    "unauthorized",
    "rate_limited",
    "server_error",
    "slow",
)
_PROPOSED = re.compile(r'"proposed_action"\s*:\s*"(BUY|SELL|HOLD)"')


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    mode: str = "success"
    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: int = 0
    slow_seconds: float = 30.0
    retry_after_seconds: float = 0.1
    script: list[str] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._check_mode(self.mode)

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def set_mode(self, mode: str, *, script: list[str] | None = None) -> None:
        self._check_mode(mode)
        for step in script or []:
            self._check_mode(step)
        self.mode = mode
        self.script = list(script or [])

    def reset(self) -> None:
        self.requests.clear()

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        self._stopping.clear()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/_fake/mode", self._set_mode)
        app.router.add_get("/_fake/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()  # wake 'slow' handlers so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------- control
    async def _set_mode(self, request: web.Request) -> web.Response:
        payload = await request.json()
        try:
            self.set_mode(payload["mode"], script=payload.get("script"))
        except (KeyError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        if payload.get("reset"):
            self.reset()
        return web.json_response({"mode": self.mode})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"mode": self.mode, "requests": self.request_count})

    # ---------------------------------------------------------------- API
    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_fake_{next(self._ids)}"}

    def _error(self, status: int, message: str, kind: str, code: str | None, extra: dict[str, str] | None = None):
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status, headers={**self._headers(), **(extra or {})})

    async def _chat_completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
        self.requests.append(RecordedRequest(request.path, dict(request.headers), body))
        mode = self.script.pop(0) if self.script else self.mode
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return self._error(401, "You didn't provide an API key.", "invalid_request_error", None)
        if mode == "unauthorized":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if mode == "rate_limited":
            wait = self.retry_after_seconds
            headers = {"retry-after": str(max(1, round(wait))), "retry-after-ms": str(int(wait * 1000))}
            return self._error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded", headers)
        if mode == "server_error":
            return self._error(500, "The server had an error while processing your request.", "server_error", None)
        if mode == "slow":
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            except TimeoutError:
                pass
        return web.json_response(self._completion(body, mode), headers=self._headers())

    def _completion(self, body: dict[str, Any], mode: str) -> dict[str, Any]:
        prompt = json.dumps(body.get("messages", []))
        match = _PROPOSED.search(prompt.replace('\\"', '"'))
        proposed = match.group(1) if match else "BUY"
        content: str | None
        refusal: str | None = None
        finish_reason = "stop"
        if mode == "disagreement":
            content = json.dumps({"action": "HOLD", "confidence": 75, "reason": "Momentum is fading; wait."})
        elif mode == "refusal":
            content, refusal = None, "I'm sorry, I can't help with trading decisions."
        elif mode == "truncated":
            content, finish_reason = '{"action": "' + proposed + '", "confid', "length"
        elif mode == "malformed":
            content = "Sure! I think you should " + proposed.lower()
        elif mode == "wrong_schema":
            content = json.dumps({"verdict": "yes", "confidence": "high"})
        else:  # success, slow
            content = json.dumps({"action": proposed, "confidence": 85, "reason": "Indicators agree with the trend."})
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(content or refusal or "") // 4)
        return {
            "id": f"chatcmpl-fake{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-4o"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }


async def _serve(fake: FakeOpenAI) -> None:
    await serve_until_stopped(fake.start, fake.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="Local fake of OpenAI's chat completions API")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="success")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every response")
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="delay of the 'slow' mode")
    args = parser.parse_args()
    fake = FakeOpenAI(mode=args.mode, port=args.port, latency_ms=args.latency_ms, slow_seconds=args.slow_seconds)
    try:
        asyncio.run(_serve(fake))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
