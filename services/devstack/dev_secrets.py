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


def _from_env_or_file(variable: str, path: Path, make: Callable[[], str]) -> tuple[str, str]:
    """(value, where it came from): the environment wins, else the file, created once."""
    from_env = os.environ.get(variable, "").strip()
    if from_env:
        return from_env, variable
    return _read_or_create(path, make), str(path)


def cron_secret(data_dir: Path) -> tuple[str, str]:
    return _from_env_or_file("CRON_SECRET", data_dir / "cron_secret", lambda: secrets.token_urlsafe(36))


def status_token(data_dir: Path) -> tuple[str, str]:
    """The bearer of /api/status, distinct from the cron secret."""
    return _from_env_or_file("STATUS_TOKEN", data_dir / "status_token", lambda: secrets.token_urlsafe(36))


def dashboard_password(data_dir: Path) -> tuple[str, str]:
    """The operators' dashboard password, distinct from the cron secret and the status token."""
    return _from_env_or_file("DASHBOARD_PASSWORD", data_dir / "dashboard_password", lambda: secrets.token_urlsafe(24))


def credentials_keys(data_dir: Path) -> tuple[str, str]:
    return _from_env_or_file("CREDENTIALS_KEYS", data_dir / "credentials_key", lambda: Fernet.generate_key().decode())
