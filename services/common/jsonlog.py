"""JSON-lines logging shared by every service.

One line per record with timestamp, severity, service, message and the
correlation ids of the current context (``tickId``, ``botInstanceId``), so a
tick can be followed across services. Secrets are never formatted into log
messages; as a second line of defence every registered secret value is
replaced by ``[REDACTED]`` before a line is written.
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

tick_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tick_id", default=None)
bot_instance_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("bot_instance_id", default=None)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words


def register_secret(value: str | bytes | None) -> None:
    """Make sure ``value`` never appears in a log line, whatever formats it."""
    if not value:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) >= _MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(text)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


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
        return redact(json.dumps(entry, default=str))


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
