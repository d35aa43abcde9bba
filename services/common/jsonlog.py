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

_secrets: set[str] = set()          # every spelling of every registered secret
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


def register_secret(value: str | bytes | None) -> None:
    """Make sure ``value`` never appears in a log line, whatever formats it."""
    if not value:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) >= _MIN_SECRET_LENGTH:
        spellings = _spellings(text)
        with _secrets_lock:
            _secrets.update(spellings)


def redact(text: str) -> str:
    # Longest first: a secret that contains another is replaced whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


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
