"""``python -m services.gateway``: the cron gateway under uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from services.common.jsonlog import configure_logging, register_secret
from services.common.metrics import start_metrics_server
from services.common.settings import SettingsError
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    configure_logging("gateway")  # LOG_LEVEL
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as error:
        print(f"gateway: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        start_metrics_server()  # METRICS_PORT; unset or 0 = no /metrics endpoint
    except (SettingsError, OSError) as error:
        print(f"gateway: metrics: {error}", file=sys.stderr)
        sys.exit(2)
    for secret in (settings.cron_secret, settings.status_token, settings.qstash_current_signing_key,
                   settings.qstash_next_signing_key):
        register_secret(secret)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn logs through the root JSON handler
        access_log=False,
        timeout_graceful_shutdown=int(settings.tick_deadline_seconds) + 5,
    )


if __name__ == "__main__":
    main()
