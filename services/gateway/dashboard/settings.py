"""The dashboard's configuration, part of the gateway's settings (read once from the environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import SettingsError, env_float, env_int, env_optional

MIN_PASSWORD_LENGTH = 16


@dataclass(frozen=True)
class DashboardSettings:
    # None: the dashboard shows its login form and refuses every login (nothing to log in with).
    password: str | None = None
    session_hours: float = 12.0
    # Failed logins allowed per client address (and ten times that from everywhere) per window.
    login_attempts: int = 5
    login_window_seconds: float = 900.0
    # Prometheus Alertmanager's base URL: its firing alerts join the dashboard's own checks. None: checks only.
    alertmanager_url: str | None = None
    tick_interval_seconds: float = 300.0   # what "a tick is late" means

    def __repr__(self) -> str:   # never print the password
        return f"DashboardSettings(enabled={self.password is not None}, session_hours={self.session_hours})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, other_secrets: tuple[str | None, ...] = ()) -> DashboardSettings:
        password = env_optional("DASHBOARD_PASSWORD", env=env)
        if password is not None:
            if len(password) < MIN_PASSWORD_LENGTH:
                raise SettingsError(
                    f"environment variable DASHBOARD_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters long")
            if password in other_secrets:
                raise SettingsError("environment variable DASHBOARD_PASSWORD must not be the cron secret or the "
                                    "status token: each grants something else")
        return cls(
            password=password,
            session_hours=env_float("DASHBOARD_SESSION_HOURS", 12.0, minimum=0.01, maximum=24.0 * 30, env=env),
            login_attempts=env_int("DASHBOARD_LOGIN_ATTEMPTS", 5, minimum=1, maximum=1000, env=env),
            login_window_seconds=env_float("DASHBOARD_LOGIN_WINDOW_SECONDS", 900.0, minimum=1.0, env=env),
            alertmanager_url=env_optional("ALERTMANAGER_URL", env=env),
            tick_interval_seconds=env_float("DASHBOARD_TICK_INTERVAL_SECONDS", 300.0, minimum=1.0, env=env),
        )
