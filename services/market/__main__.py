"""Entry point: ``python -m services.market``."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.common.grpc_server import ServerOptions, serve
from services.common.metrics import install_grpc_latency_hook, start_metrics_server
from services.common.jsonlog import configure_logging
from services.common.settings import SettingsError
from services.market.app import binding, build_service
from services.market.settings import MarketSettings

log = logging.getLogger("services.market")


async def main(settings: MarketSettings, options: ServerOptions) -> None:
    service = build_service(settings)
    log.info(
        "market data source ready",
        extra={"source": service.source.name, "weightBudget1m": settings.weight_budget_1m, "weightShare": settings.weight_budget_share},
    )
    await serve(
        "market",
        [binding(service)],
        host=settings.grpc_host,
        port=settings.grpc_port,
        options=options,
        grace=settings.shutdown_grace_seconds,
        on_stop=service.close,
    )


def run() -> None:
    configure_logging("market")
    try:
        settings = MarketSettings.from_env()
        options = ServerOptions.from_env(settings.grpc_host)
        install_grpc_latency_hook()
        start_metrics_server()  # METRICS_PORT; unset or 0 keeps it off
    except SettingsError as error:
        log.error("invalid configuration", extra={"reason": str(error)})
        sys.exit(2)
    asyncio.run(main(settings, options))


if __name__ == "__main__":
    run()
