"""``python -m services.executor``: the executor gRPC server."""

from __future__ import annotations

import asyncio
import sys

from services.common.grpc_server import ServerOptions, serve
from services.common.jsonlog import configure_logging
from services.common.metrics import start_metrics_server
from services.common.settings import SettingsError
from services.executor.server import ExecutorApp
from services.executor.settings import ExecutorSettings


async def main() -> None:
    settings = ExecutorSettings.from_env()
    options = ServerOptions.from_env(settings.grpc_host)
    start_metrics_server()  # METRICS_PORT; unset or 0 = no /metrics endpoint
    app = ExecutorApp(settings)
    # In the background: a database that is down at start-up must not hold up the start.
    indexing = asyncio.create_task(app.leases.ensure_index())
    try:
        await serve("executor", [app.binding()], host=settings.grpc_host, port=settings.grpc_port,
                    options=options, on_stop=app.close)
    finally:
        indexing.cancel()
        await app.close()


if __name__ == "__main__":
    configure_logging("executor")
    try:
        asyncio.run(main())
    except SettingsError as error:
        print(f"executor: {error}", file=sys.stderr)
        sys.exit(2)
    except ValueError as error:  # e.g. CREDENTIALS_KEYS that are not Fernet keys
        print(f"executor: {error}", file=sys.stderr)
        sys.exit(2)
