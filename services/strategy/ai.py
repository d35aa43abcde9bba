"""AI confirmation through the official openai SDK: the one seam where its client is built.

``confirm`` never raises: every failure (timeout, connection error, 401,
429, 5xx, refusal, truncated or malformed answer, missing key) comes back as
an ``AiOutcome`` with a short ``failure`` text and a metric ``kind`` for the
fallback. The whole call, the SDK's bounded retries included, runs inside
OPENAI_TIMEOUT_SECONDS, so the tick can rely on an upper bound.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from services.strategy.prompt import ANSWER_RESPONSE_FORMAT, AiAnswer, PromptFacts, build_messages
from services.strategy.settings import StrategySettings
from services.strategy.strategies.base import Decision

log = logging.getLogger(__name__)

NOT_CONFIGURED = "AI not configured"


@dataclass(frozen=True)
class AiOutcome:
    model: str
    answer: Decision | None = None  # set when the AI answered within the schema
    failure: str | None = None  # why not, for the reply's fallback_reason (never carries secrets)
    failure_kind: str | None = None  # a metric label: timeout, connection, auth, rate_limited, ...
    prompt_tokens: int = 0
    completion_tokens: int = 0


class AiConfirmer(Protocol):
    async def confirm(self, facts: PromptFacts) -> AiOutcome: ...

    async def close(self) -> None: ...


class DisabledAiConfirmer:
    """Used when OPENAI_API_KEY is not set."""

    def __init__(self, model: str) -> None:
        self.model = model

    async def confirm(self, facts: PromptFacts) -> AiOutcome:
        return AiOutcome(self.model, failure=NOT_CONFIGURED, failure_kind="not_configured")

    async def close(self) -> None:
        return None


def _status_failure(error: openai.APIStatusError) -> tuple[str, str]:
    status = error.status_code
    if status in (401, 403):
        return "auth", f"AI rejected the credentials (HTTP {status})"
    if status == 429:
        retry_after = error.response.headers.get("retry-after")
        suffix = f", retry-after {retry_after}s" if retry_after else ""
        return "rate_limited", f"AI rate limited (HTTP 429{suffix})"
    if status >= 500:
        return "server_error", f"AI server error (HTTP {status})"
    return "api_error", f"AI request rejected (HTTP {status})"


class OpenAiConfirmer:
    def __init__(self, settings: StrategySettings) -> None:
        if settings.openai_api_key is None:
            raise ValueError("OpenAiConfirmer needs OPENAI_API_KEY")
        self.model = settings.openai_model
        self._timeout = settings.openai_timeout_seconds
        # Each attempt gets an equal share of the budget so a timed-out first
        # attempt still leaves room for the retry; asyncio.timeout in confirm()
        # bounds the whole call, backoff included.
        attempts = settings.openai_max_retries + 1
        self._client = AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds / attempts,
            max_retries=settings.openai_max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def confirm(self, facts: PromptFacts) -> AiOutcome:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._ask(facts)
        except TimeoutError:
            return self._failed("timeout", f"AI timed out after {self._timeout:g}s")
        except openai.APITimeoutError:
            return self._failed("timeout", f"AI timed out after {self._timeout:g}s")
        except openai.APIConnectionError:
            return self._failed("connection", "AI connection error")
        except openai.APIStatusError as error:
            kind, text = _status_failure(error)
            return self._failed(kind, text, request_id=error.request_id)
        except openai.OpenAIError as error:
            return self._failed("api_error", f"AI client error ({type(error).__name__})")
        except Exception as error:  # the tick must never fail because of the AI
            return self._failed("unexpected", f"AI call failed unexpectedly ({type(error).__name__})")

    async def _ask(self, facts: PromptFacts) -> AiOutcome:
        completion = await self._client.chat.completions.create(
            model=self.model,
            messages=build_messages(facts),  # type: ignore[arg-type]
            response_format=ANSWER_RESPONSE_FORMAT,  # type: ignore[arg-type]
            temperature=0,
        )
        usage = completion.usage
        tokens = {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
        request_id = getattr(completion, "_request_id", None)
        if not completion.choices:
            return self._failed("malformed", "AI answer had no choices", request_id=request_id, **tokens)
        choice = completion.choices[0]
        failure: tuple[str, str] | None = None
        if choice.message.refusal:
            failure = ("refusal", f"AI refused: {choice.message.refusal[:200]}")
        elif choice.finish_reason == "length":
            failure = ("truncated", "AI answer truncated (finish_reason length)")
        elif choice.finish_reason == "content_filter":
            failure = ("refusal", "AI answer blocked by the content filter")
        if failure is not None:
            return self._failed(*failure, request_id=request_id, **tokens)
        try:
            answer = AiAnswer.model_validate_json(choice.message.content or "")
        except ValidationError:
            return self._failed("malformed", "AI answer did not match the schema", request_id=request_id, **tokens)
        decision = Decision(answer.action, float(answer.confidence), answer.reason)
        return AiOutcome(self.model, answer=decision, **tokens)

    def _failed(
        self,
        kind: str,
        text: str,
        *,
        request_id: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> AiOutcome:
        log.warning(
            "AI confirmation failed", extra={"failureKind": kind, "reason": text, "openaiRequestId": request_id}
        )
        return AiOutcome(
            self.model,
            failure=text,
            failure_kind=kind,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def build_ai_confirmer(settings: StrategySettings) -> AiConfirmer:
    if not settings.ai_configured:
        return DisabledAiConfirmer(settings.openai_model)
    return OpenAiConfirmer(settings)
