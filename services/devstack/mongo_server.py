"""The embedded MongoDB of `make run` and of the tests: a mongoeco wire server.

Real pymongo clients talk to it over TCP exactly as to MongoDB 7. The SQLite
engine persists to a file (``make run``); the memory engine is for tests.
Prints ``READY <uri>`` once listening, so launchers can wait for it.

    python -m services.devstack.mongo_server --engine sqlite --path data/dev/mongo.sqlite --port 27017
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from bson import ObjectId


def speed_up_memory_engine(engine_class: type) -> None:
    """Three costs of mongoeco's memory engine that grow with data it need not look at.

    Three O(collection size) paths become O(1) (or O(ids asked)) for ObjectId/str ids. Both rest on
    the same fact: for ObjectId and string ``_id`` values equality is exact (no
    1 == 1.0 == Int64(1) as for numbers), so the engine's storage-key lookup by
    ``_id`` is already the whole answer. Numeric ids, and queries with a
    collation, keep the engine's own paths. Real MongoDB needs neither: its
    ``_id`` index does this. The third makes storing a document O(size) instead
    of O(size x depth). Answers are unchanged (tests/devstack prove it).
    """
    _skip_id_scan_on_insert(engine_class)
    _skip_scan_on_id_miss(engine_class)
    _validate_each_document_once()


def _exact_id(value: object) -> bool:
    return isinstance(value, ObjectId | str)


def _skip_id_scan_on_insert(engine_class: type) -> None:
    """A one-document insert scans the collection for a numerically equal ``_id``.

    mongoeco's wire ``insert`` command inserts documents one by one, so this
    made inserting N TradeLogs O(N²) (4,000 took ~40 s).
    """
    original = engine_class._ensure_unique_indexes
    if getattr(original, "_speeded_up", False):
        return

    def ensure_unique_indexes(self, db_name, coll_name, candidate, **options):  # type: ignore[no-untyped-def]
        if options.get("scan_payload_id") and _exact_id(candidate.get("_id")):
            options["scan_payload_id"] = False
        return original(self, db_name, coll_name, candidate, **options)

    ensure_unique_indexes._speeded_up = True  # type: ignore[attr-defined]
    engine_class._ensure_unique_indexes = ensure_unique_indexes


def _skip_scan_on_id_miss(engine_class: type) -> None:
    """A query by ``_id`` that finds no document falls back to scanning the collection, and so
    does every ``_id: {$in: [...]}``.

    Every find, update, delete and upsert by an ``_id`` that does not exist
    (a bot without a paper position, an entry not yet filled, a new paper
    account) paid a full scan: at 10,000 bots, most of the tick's database time.
    """
    from mongoeco.core.query_plan import InCondition

    original = engine_class._candidate_items_for_plan_locked
    if getattr(original, "_speeded_up", False):
        return

    def candidate_items(self, coll, query_plan, **options):  # type: ignore[no-untyped-def]
        if options.get("collation") is not None:
            return original(self, coll, query_plan, **options)
        wanted = self._direct_id_lookup_from_plan(query_plan)
        if _exact_id(wanted) and coll.get(self._storage_key(wanted)) is None:
            return []
        if (isinstance(query_plan, InCondition) and query_plan.field == "_id" and query_plan.values
                and all(_exact_id(value) for value in query_plan.values) and hasattr(coll, "ordered_keys")):
            # {_id: {$in: [...]}} (the executor's batched bot reads): the keys themselves, in natural order.
            keys = {self._storage_key(value) for value in query_plan.values}
            return [(key, coll[key]) for key in coll.ordered_keys(keys)]
        return original(self, coll, query_plan, **options)

    candidate_items._speeded_up = True  # type: ignore[attr-defined]
    engine_class._candidate_items_for_plan_locked = candidate_items


def _validate_each_document_once() -> None:
    """Storing a document validated every nested sub-document again at each level.

    ``DocumentCodec.encode`` checks the whole value it is given (keys are
    strings, numbers fit BSON, no sets), then encodes each child by calling
    itself, which checks that child's whole subtree again: a bot document
    with its config, statistics and last analysis was walked once per level of
    nesting, a fifth of the embedded database's time in a tick. The outermost
    call now validates, as before and before any encoding, and the nested
    calls skip what it already checked.
    """
    import threading

    from mongoeco.core import codec

    if getattr(codec.DocumentCodec.encode, "_speeded_up", False):
        return
    validate, encode = codec.validate_bson_value, codec.DocumentCodec.encode
    inside = threading.local()

    def encode_validated_once(data):  # type: ignore[no-untyped-def]
        if getattr(inside, "depth", 0):
            inside.depth += 1
            try:
                return encode(data)
            finally:
                inside.depth -= 1
        validate(data)
        inside.depth = 1
        try:
            return encode(data)
        finally:
            inside.depth = 0

    def validate_unless_checked(value):  # type: ignore[no-untyped-def]
        if not getattr(inside, "depth", 0):
            validate(value)

    encode_validated_once._speeded_up = True  # type: ignore[attr-defined]
    codec.validate_bson_value = validate_unless_checked
    codec.DocumentCodec.encode = staticmethod(encode_validated_once)


async def run(engine_name: str, path: str | None, host: str, port: int, auth_user: str | None = None) -> None:
    from mongoeco.engines.memory import MemoryEngine
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.auth import WireAuthUser
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    if engine_name == "sqlite":
        if not path:
            raise SystemExit("--path is required with --engine sqlite")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = SQLiteEngine(path)
    else:
        speed_up_memory_engine(MemoryEngine)
        engine = MemoryEngine()
    users: tuple[WireAuthUser, ...] = ()
    if auth_user:
        # The password comes from the environment, never the command line (which `ps` shows).
        users = (WireAuthUser(auth_user, os.environ["MONGO_AUTH_PASSWORD"], "admin",
                              roles=({"role": "root", "db": "admin"},)),)
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, mongodb_dialect="7.0", auth_users=users)
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
    parser.add_argument("--auth-user", help="require SCRAM authentication as this user (password: MONGO_AUTH_PASSWORD)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.engine, args.path, args.host, args.port, args.auth_user))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
