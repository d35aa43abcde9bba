"""Development secrets of `make run`: from the environment, else created once under the data dir."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet

MIN_CRON_SECRET_LENGTH = 32


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    # Owner-only from the first byte: the file is created with 0600.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def cron_secret(data_dir: Path) -> tuple[str, str]:
    """(secret, where it came from)."""
    from_env = os.environ.get("CRON_SECRET", "").strip()
    if from_env:
        return from_env, "CRON_SECRET"
    path = data_dir / "cron_secret"
    return _read_or_create(path, lambda: secrets.token_urlsafe(36)), str(path)


def credentials_keys(data_dir: Path) -> tuple[str, str]:
    from_env = os.environ.get("CREDENTIALS_KEYS", "").strip()
    if from_env:
        return from_env, "CREDENTIALS_KEYS"
    path = data_dir / "credentials_key"
    return _read_or_create(path, lambda: Fernet.generate_key().decode()), str(path)
