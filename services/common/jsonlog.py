"""JSON-lines logging shared by every service.

One line per record with timestamp, severity, service, message and the
correlation ids of the current context (``tickId``, ``botInstanceId``), so a
tick can be followed across services. Secrets are never formatted into log
messages; as a second line of defence every registered secret value is
replaced by ``[REDACTED]`` in every value before the line is serialised,
and in every escaped or percent-encoded spelling in the line itself.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

tick_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tick_id", default=None)
bot_instance_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("bot_instance_id", default=None)

_secrets: dict[str, int] = {}      # every spelling of every registered secret -> how many secrets use it
_by_prefix: dict[str, tuple[str, ...]] = {}   # a spelling's first _MIN_SECRET_LENGTH characters -> spellings
_secrets_lock = threading.Lock()
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words
REDACTED = "[REDACTED]"


def _spellings(secret: str) -> set[str]:
    """The forms a secret takes on its way into a line: as is, JSON-escaped (ASCII or not),
    percent-encoded (a URI), repr-escaped (a formatted exception)."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        repr(secret)[1:-1],
    }
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}   # a JSON document logged inside a string
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


def _index(spellings: set[str], change: int) -> None:
    with _secrets_lock:
        for form in spellings:
            count = _secrets.get(form, 0) + change
            prefix = form[:_MIN_SECRET_LENGTH]
            bucket = set(_by_prefix.get(prefix, ()))
            if count > 0:
                _secrets[form] = count
                bucket.add(form)
            else:
                _secrets.pop(form, None)
                bucket.discard(form)
            if bucket:
                _by_prefix[prefix] = tuple(sorted(bucket, key=len, reverse=True))
            else:
                _by_prefix.pop(prefix, None)


def register_secret(value: str | bytes | None) -> None:
    """Make sure ``value`` never appears in a log line, whatever formats it."""
    text = _text(value)
    if text is not None:
        _index(_spellings(text), +1)


def forget_secret(value: str | bytes | None) -> None:
    """``value`` is dead (a replaced listenKey): stop looking for it, so the set stays bounded."""
    text = _text(value)
    if text is not None:
        _index(_spellings(text), -1)


def _text(value: str | bytes | None) -> str | None:
    if not value:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return text if len(text) >= _MIN_SECRET_LENGTH else None


def redact(text: str) -> str:
    """``text`` with every character of every secret occurrence replaced; overlapping or adjacent occurrences
    become one ``[REDACTED]``. One dictionary lookup per position, however many secrets (thousands of
    accounts' keys): a scan per secret made logging the executor's bottleneck."""
    index = _by_prefix
    if not index or len(text) < _MIN_SECRET_LENGTH:
        return text
    covered_to = -1
    spans: list[list[int]] = []
    for start in range(len(text) - _MIN_SECRET_LENGTH + 1):
        candidates = index.get(text[start:start + _MIN_SECRET_LENGTH])
        if candidates is None:
            continue
        for secret in candidates:   # longest first
            if text.startswith(secret, start):
                end = start + len(secret)
                if spans and start <= covered_to:
                    spans[-1][1] = max(spans[-1][1], end)
                else:
                    spans.append([start, end])
                covered_to = max(covered_to, end)
                break
    if not spans:
        return text
    parts, at = [], 0
    for start, end in spans:
        parts.append(text[at:start])
        parts.append(REDACTED)
        at = end
    parts.append(text[at:])
    return "".join(parts)


def redact_value(value: Any) -> Any:
    """``value`` with every registered secret replaced, before it is serialised (so no escaping
    can hide a secret from the match); containers are walked, other objects become their text."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(key)): redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tick_id = tick_id_var.get()
        if tick_id:
            entry["tickId"] = tick_id
        bot_id = bot_instance_id_var.get()
        if bot_id:
            entry["botInstanceId"] = bot_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type and text only: tracebacks can carry local
            # values, and these lines leave the machine.
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        # Values first, then the line: what serialisation escapes is caught in its escaped spelling.
        return redact(json.dumps(redact_value(entry), default=str))


def configure_logging(service: str, level: str | None = None) -> None:
    """JSON lines on stdout at ``level``, else ``LOG_LEVEL`` from the environment (default INFO)."""
    level = level or os.environ.get("LOG_LEVEL", "INFO").strip() or "INFO"
    if level.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {level!r}")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request URLs and headers at DEBUG; keep them quiet.
    for noisy in ("httpx", "httpcore", "openai", "binance", "pymongo", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
