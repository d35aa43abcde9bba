"""Entry point: ``python -m services.strategy``."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.common.grpc_server import ServerOptions, serve
from services.common.jsonlog import configure_logging
from services.common.metrics import install_grpc_latency_hook, start_metrics_server
from services.common.settings import SettingsError
from services.strategy.server import build_analyzer, strategy_binding
from services.strategy.settings import StrategySettings

log = logging.getLogger("services.strategy")


async def run(settings: StrategySettings, options: ServerOptions) -> None:
    analyzer = build_analyzer(settings)
    log.info(
        "strategy settings",
        extra={"aiConfigured": settings.ai_configured, "openaiModel": settings.openai_model},
    )
    await serve(
        "strategy",
        [strategy_binding(analyzer)],
        host=settings.grpc_host,
        port=settings.grpc_port,
        options=options,
        on_stop=analyzer.close,
    )


def main() -> None:
    configure_logging("strategy")
    try:
        settings = StrategySettings.from_env()
        options = ServerOptions.from_env(settings.grpc_host)
        install_grpc_latency_hook()
        start_metrics_server()  # METRICS_PORT; unset or 0 keeps it off
    except SettingsError as error:
        log.error("invalid configuration", extra={"reason": str(error)})
        sys.exit(2)
    asyncio.run(run(settings, options))


if __name__ == "__main__":
    main()
