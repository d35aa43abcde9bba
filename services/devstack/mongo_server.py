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


def skip_id_scan_for_exact_ids(engine_class: type) -> None:
    """Make single-document inserts O(1) in the collection size for ObjectId/str ids.

    mongoeco's wire ``insert`` command inserts documents one by one, and a
    one-document insert scans the whole collection for an ``_id`` that is
    *numerically* equal (1 == 1.0 == Int64(1)) to the new one. For ObjectId and
    string ids equality is exact, and the storage-key lookup the engine does
    first already catches every duplicate, so the scan only costs time: it
    made inserting N TradeLogs O(N²) (4,000 took ~40 s). Numeric ids keep the scan.
    """
    from bson import ObjectId

    original = engine_class._ensure_unique_indexes
    if getattr(original, "_skips_exact_id_scan", False):
        return

    def ensure_unique_indexes(self, db_name, coll_name, candidate, **options):  # type: ignore[no-untyped-def]
        if options.get("scan_payload_id") and isinstance(candidate.get("_id"), ObjectId | str):
            options["scan_payload_id"] = False
        return original(self, db_name, coll_name, candidate, **options)

    ensure_unique_indexes._skips_exact_id_scan = True  # type: ignore[attr-defined]
    engine_class._ensure_unique_indexes = ensure_unique_indexes


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
        skip_id_scan_for_exact_ids(MemoryEngine)
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
