"""Credential administration: store a new exchange connection, re-encrypt all under the newest key.

    python -m services.executor.admin add-connection --user-id ID --mode paper|testnet|live
    python -m services.executor.admin rotate-keys

``add-connection`` reads the API key and secret from ``TRADEBOT_API_KEY`` /
``TRADEBOT_API_SECRET``, or two lines on stdin with ``--stdin``, or prompts
for them without echo. It prints only the new connection's id. Both commands
use MONGODB_URI, MONGODB_DB and CREDENTIALS_KEYS like the server.

``store_connection``/``rotate_all`` (sync pymongo) and their ``_async``
twins are the same operations for other code (demo seeding, a CLI).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from services.common.errors import TradebotError
from services.common.jsonlog import register_secret
from services.common.settings import SettingsError, env_mongodb_uri, env_str
from services.executor.connections import MODES, parse_object_id
from services.executor.credentials import parse_credentials_keys

API_KEY_ENV = "TRADEBOT_API_KEY"
API_SECRET_ENV = "TRADEBOT_API_SECRET"  # noqa: S105 (a variable name, not a secret)


def connection_document(user_id: str | ObjectId, mode: str, api_key: str, api_secret: str,
                        fernet: Fernet | MultiFernet, *, active: bool = True) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if mode != "paper" and (not api_key or not api_secret):
        raise ValueError("live and testnet connections need an API key and secret")
    register_secret(api_key)
    register_secret(api_secret)
    now = datetime.now(UTC)
    return {
        "userId": user_id if isinstance(user_id, ObjectId) else parse_object_id(user_id, "user id"),
        "exchange": "binance",
        "mode": mode,
        "apiKey": fernet.encrypt(api_key.encode()).decode(),
        "apiSecret": fernet.encrypt(api_secret.encode()).decode(),
        "isActive": active,
        "createdAt": now,
        "updatedAt": now,
    }


def store_connection(db: Database, user_id: str | ObjectId, mode: str, api_key: str, api_secret: str,
                     fernet: Fernet | MultiFernet, *, active: bool = True) -> str:
    """Insert an exchange connection with encrypted keys; returns its id (hex)."""
    result = db["exchangeconnections"].insert_one(connection_document(user_id, mode, api_key, api_secret, fernet, active=active))
    return str(result.inserted_id)


async def store_connection_async(db: AsyncDatabase, user_id: str | ObjectId, mode: str, api_key: str,
                                 api_secret: str, fernet: Fernet | MultiFernet, *, active: bool = True) -> str:
    document = connection_document(user_id, mode, api_key, api_secret, fernet, active=active)
    result = await db["exchangeconnections"].insert_one(document)
    return str(result.inserted_id)


def _rotated_fields(doc: dict[str, Any], multifernet: MultiFernet) -> dict[str, str]:
    update: dict[str, str] = {}
    for field in ("apiKey", "apiSecret"):
        token = doc.get(field)
        if token:
            update[field] = multifernet.rotate(token.encode()).decode()
    return update


def rotate_all(db: Database, multifernet: MultiFernet) -> int:
    """Re-encrypt every connection's tokens under the first key; returns how many were rewritten.

    A token no key can decrypt stops the run (InvalidToken) before that document is touched.
    """
    count = 0
    collection = db["exchangeconnections"]
    for doc in collection.find({}, {"apiKey": 1, "apiSecret": 1}):
        update = _rotated_fields(doc, multifernet)
        if update:
            collection.update_one({"_id": doc["_id"]}, {"$set": {**update, "updatedAt": datetime.now(UTC)}})
            count += 1
    return count


async def rotate_all_async(db: AsyncDatabase, multifernet: MultiFernet) -> int:
    count = 0
    collection = db["exchangeconnections"]
    async for doc in collection.find({}, {"apiKey": 1, "apiSecret": 1}):
        update = _rotated_fields(doc, multifernet)
        if update:
            await collection.update_one({"_id": doc["_id"]}, {"$set": {**update, "updatedAt": datetime.now(UTC)}})
            count += 1
    return count


def multifernet_from_env() -> MultiFernet:
    keys = parse_credentials_keys(env_str("CREDENTIALS_KEYS"))
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise SettingsError("CREDENTIALS_KEYS holds a value that is not a Fernet key") from None


def _read_keys(from_stdin: bool, mode: str) -> tuple[str, str]:
    if from_stdin:
        lines = sys.stdin.read().splitlines()
        values = [line.strip() for line in lines[:2]] + ["", ""]
        return values[0], values[1]
    api_key, api_secret = os.environ.get(API_KEY_ENV, ""), os.environ.get(API_SECRET_ENV, "")
    if api_key and api_secret:
        return api_key, api_secret
    if mode == "paper" and not sys.stdin.isatty():
        return "", ""  # a paper account signs nothing; scripts need not invent keys
    return getpass.getpass("Binance API key: "), getpass.getpass("Binance API secret: ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.executor.admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-connection", help="store a new exchange connection with encrypted API keys")
    add.add_argument("--user-id", required=True, help="the user's id (24-character hex ObjectId)")
    add.add_argument("--mode", required=True, choices=MODES)
    add.add_argument("--stdin", action="store_true", help="read the API key and secret as two lines on stdin")
    add.add_argument("--inactive", action="store_true", help="store the connection as inactive")
    commands.add_parser("rotate-keys", help="re-encrypt every connection under the first CREDENTIALS_KEYS key")
    args = parser.parse_args(argv)
    try:
        multifernet = multifernet_from_env()
        client: MongoClient = MongoClient(env_mongodb_uri(), tz_aware=True)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        db = client[env_str("MONGODB_DB", "tradebots")]
        if args.command == "add-connection":
            api_key, api_secret = _read_keys(args.stdin, args.mode)
            try:
                connection_id = store_connection(db, args.user_id, args.mode, api_key, api_secret, multifernet,
                                                 active=not args.inactive)
            except (ValueError, TradebotError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            print(connection_id)
            return 0
        try:
            count = rotate_all(db, multifernet)
        except InvalidToken:
            print("error: a stored token could not be decrypted with any key in CREDENTIALS_KEYS", file=sys.stderr)
            return 1
        print(f"re-encrypted {count} exchange connection(s) under the newest key")
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
