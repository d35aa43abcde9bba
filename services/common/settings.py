"""Reading configuration from the environment, once, with clear failures.

Each service defines its own frozen dataclass and builds it with these
helpers in a ``from_env()`` classmethod; a missing or malformed required
variable stops start-up with the variable's name in the message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote

from services.common.jsonlog import register_secret


class SettingsError(ValueError):
    """A required environment variable is missing or malformed."""


def _raw(env: Mapping[str, str] | None, name: str) -> str | None:
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, env: Mapping[str, str] | None = None) -> str:
    value = _raw(env, name)
    if value is None:
        if default is None:
            raise SettingsError(f"environment variable {name} is required but not set")
        return default
    return value


def env_optional(name: str, *, env: Mapping[str, str] | None = None) -> str | None:
    return _raw(env, name)


def env_mongodb_uri(name: str = "MONGODB_URI", *, env: Mapping[str, str] | None = None) -> str:
    """The MongoDB URI; its password (as written and percent-decoded) is registered for log redaction."""
    uri = env_str(name, env=env)
    register_uri_password(uri)
    return uri


def register_uri_password(uri: str) -> None:
    """A password in ``scheme://user:password@host`` never reaches a log line, in any spelling."""
    credentials = uri.split("://", 1)[-1].rpartition("@")[0]   # what urlsplit would call the userinfo
    password = credentials.partition(":")[2]
    if password:
        register_secret(password)
        register_secret(unquote(password))


def env_int(
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    raw = _raw(env, name)
    if raw is None:
        if default is None:
            raise SettingsError(f"environment variable {name} is required but not set")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be an integer, got {raw!r}") from None
    _check_range(name, value, minimum, maximum)
    return value


def env_float(
    name: str,
    default: float | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    raw = _raw(env, name)
    if raw is None:
        if default is None:
            raise SettingsError(f"environment variable {name} is required but not set")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be a number, got {raw!r}") from None
    if value != value:  # NaN
        raise SettingsError(f"environment variable {name} must be a number, got {raw!r}")
    _check_range(name, value, minimum, maximum)
    return value


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"environment variable {name} must be true or false, got {raw!r}")


def env_choice(
    name: str, choices: tuple[str, ...], default: str, *, env: Mapping[str, str] | None = None
) -> str:
    value = env_str(name, default, env=env)
    if value not in choices:
        raise SettingsError(f"environment variable {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise SettingsError(f"environment variable {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"environment variable {name} must be <= {maximum}, got {value}")
