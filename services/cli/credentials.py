"""``tradebot connection add`` and ``tradebot keys rotate``: the executor's credential code, run locally.

Encryption and rotation are the executor's (services/executor/admin.py,
connections.py); they are imported lazily so every other command works
without the executor's dependencies. Secrets are read with getpass (no
echo) or from stdin, never taken as arguments (they would land in shell
history and ``ps``), and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from pymongo import AsyncMongoClient, MongoClient

from services.cli.context import database, mongo_settings, object_id, require_env
from services.cli.errors import USAGE, CliError
from services.common.jsonlog import register_secret

MODES = ("paper", "testnet", "live")
_EXECUTOR_MODULES = ("services.executor.admin", "services.executor.connections")


def _executor_function(name: str) -> Callable[..., Any]:
    for module_name in _EXECUTOR_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        function = getattr(module, name, None)
        if callable(function):
            return function
    raise CliError(f"this installation's executor has no {name}() (looked in {', '.join(_EXECUTOR_MODULES)})")


def _multi_fernet() -> Any:
    keys = [key.strip() for key in require_env("CREDENTIALS_KEYS", "(comma-separated Fernet keys)").split(",")]
    from services.executor.credentials import CredentialVault

    try:
        return CredentialVault([key for key in keys if key]).fernet
    except ValueError as error:
        raise CliError(str(error), USAGE) from None


def _call_with_db(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(db, *args)`` with an async or a sync database, whichever it is written for."""
    uri, name = mongo_settings()
    if inspect.iscoroutinefunction(function):
        async def run() -> Any:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
            try:
                return await function(client[name], *args)
            finally:
                await client.close()

        return asyncio.run(run())
    client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
    try:
        return function(client[name], *args)
    finally:
        client.close()


def _read_keys(args: argparse.Namespace) -> tuple[str, str]:
    if args.api_key_stdin:
        lines = sys.stdin.read().splitlines()
        if args.mode == "paper" and not any(line.strip() for line in lines):
            return "", ""
        if len(lines) < 2:
            raise CliError("--api-key-stdin expects two lines on stdin: the API key, then the API secret", USAGE)
        api_key, api_secret = lines[0].strip(), lines[1].strip()
    else:
        api_key = getpass.getpass("Binance API key: ").strip()
        api_secret = getpass.getpass("Binance API secret: ").strip()
    if not api_key or not api_secret:
        raise CliError("the API key and secret must not be empty", USAGE)
    register_secret(api_key)
    register_secret(api_secret)
    return api_key, api_secret


def _describe(error: Exception) -> str:
    """Project errors carry a safe message; anything else is shown by type only (its text might hold a value)."""
    message = getattr(error, "message", None)
    return message if isinstance(message, str) else type(error).__name__


def _connection_id(result: Any) -> str:
    """store_connection may return the new id or the stored document."""
    if isinstance(result, dict):
        return str(result.get("_id") or result.get("id") or "")
    return str(getattr(result, "id", result))


def connection_add(args: argparse.Namespace) -> int:
    user_id = object_id(args.user_id, "--user-id")
    store_connection = _executor_function("store_connection")
    fernet = _multi_fernet()
    with database() as db:
        if db.users.find_one({"_id": user_id}, {"_id": 1}) is None:
            raise CliError(f"no user {user_id}; create one with `tradebot user create --email ...`")
    if args.mode == "paper" and not args.api_key_stdin:
        api_key, api_secret = "", ""  # a paper account signs nothing
    else:
        api_key, api_secret = _read_keys(args)
    try:
        result = _call_with_db(store_connection, user_id, args.mode, api_key, api_secret, fernet)
    except ValueError as error:  # the executor's validation: messages name the rule, never a value
        raise CliError(f"could not store the connection: {error}", USAGE) from None
    except Exception as error:
        raise CliError(f"could not store the connection: {_describe(error)}") from None
    print(f"stored {args.mode} exchange connection {_connection_id(result)} for user {user_id} "
          "(API key and secret encrypted)")
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    from cryptography.fernet import InvalidToken

    rotate_all = _executor_function("rotate_all")
    fernet = _multi_fernet()
    try:
        result = _call_with_db(rotate_all, fernet)
    except InvalidToken:
        raise CliError("key rotation stopped: a stored token could not be decrypted with any key in "
                       "CREDENTIALS_KEYS (keep the old key in the list until rotation has finished)") from None
    except Exception as error:
        raise CliError(f"key rotation failed: {_describe(error)}") from None
    count = result if isinstance(result, int) else getattr(result, "rotated", result)
    print(f"re-encrypted {count} exchange connection(s) under the first key in CREDENTIALS_KEYS")
    print("older keys can be removed from CREDENTIALS_KEYS once every service runs with the new list")
    return 0
