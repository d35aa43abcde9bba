"""The embedded MongoDB of `make run` and of the tests: a mongoeco wire server.

Real pymongo clients talk to it over TCP exactly as to MongoDB 7. The SQLite
engine persists to a file (``make run``); the memory engine is for tests.
Prints ``READY <uri>`` once listening, so launchers can wait for it.

    python -m services.devstack.mongo_server --engine sqlite --path data/dev/mongo.sqlite --port 27017
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path


async def run(engine_name: str, path: str | None, host: str, port: int) -> None:
    from mongoeco.engines.memory import MemoryEngine
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    if engine_name == "sqlite":
        if not path:
            raise SystemExit("--path is required with --engine sqlite")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = SQLiteEngine(path)
    else:
        engine = MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, mongodb_dialect="7.0")
    address = await server.start()
    print(f"READY {address.uri}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.engine, args.path, args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
