"""Secrets never reach a log line, in any spelling: every service registers its MongoDB password
when it reads its settings, and values are redacted before the line is serialised."""

from __future__ import annotations

import json
from collections.abc import Callable
import logging
import time
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from services.common.jsonlog import JsonFormatter, forget_secret, register_secret
from services.executor.settings import ExecutorSettings
from services.gateway.settings import GatewaySettings

# A quote, a backslash and a non-ASCII letter: each is escaped by JSON, and all by a URI.
PASSWORD_TEMPLATE = 'p"w\\é-{service}-Zq81'


def _spellings(secret: str) -> dict[str, str]:
    return {
        "as is": secret,
        "JSON-escaped": json.dumps(secret)[1:-1],
        "JSON, unescaped non-ASCII": json.dumps(secret, ensure_ascii=False)[1:-1],
        "percent-encoded": quote(secret, safe=""),
        "repr": repr(secret)[1:-1],
    }


def _line(secret: str) -> str:
    """One log record carrying the secret every way code could: message, extra values, nested, an exception."""
    uri = f"mongodb://app:{quote(secret, safe='')}@mongo:27017/tradebots"
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "connecting to %s with %r", (uri, secret), None)
    record.settings = {"uri": uri, "password": secret, "nested": [{"raw": secret}]}
    record.document = json.dumps({"password": secret})   # a JSON document logged inside a string
    try:
        raise ConnectionError(f"auth failed for {secret!r}")
    except ConnectionError:
        import sys
        record.exc_info = sys.exc_info()
    return JsonFormatter("test").format(record)


def _settings_readers(password: str) -> dict[str, Callable[[], object]]:
    uri = f"mongodb://app:{quote(password, safe='')}@127.0.0.1:27017/?authSource=admin"
    return {
        "gateway": lambda: GatewaySettings.from_env({"CRON_SECRET": "c" * 40, "MONGODB_URI": uri}),
        "executor": lambda: ExecutorSettings.from_env({"MONGODB_URI": uri,
                                                       "CREDENTIALS_KEYS": Fernet.generate_key().decode()}),
    }


@pytest.mark.parametrize("service", ["gateway", "executor", "cli"])
def test_every_reader_of_mongodb_uri_registers_its_password_in_every_spelling(service: str, monkeypatch) -> None:
    password = PASSWORD_TEMPLATE.format(service=service)
    if service == "cli":
        from services.cli.context import mongo_settings
        monkeypatch.setenv("MONGODB_URI", f"mongodb://app:{quote(password, safe='')}@127.0.0.1:1/")
        mongo_settings()
    else:
        _settings_readers(password)[service]()
    line = _line(password)
    leaked = {name for name, form in _spellings(password).items() if form in line}
    assert not leaked, f"{service}: {sorted(leaked)} in {line}"
    assert "[REDACTED]" in line and json.loads(line)["settings"]["nested"] == [{"raw": "[REDACTED]"}]


def test_an_unregistered_value_is_left_alone() -> None:
    register_secret("registered-secret-123")
    assert "ordinary-value-456" in _line("ordinary-value-456")


def test_overlapping_secrets_leave_no_character_of_either() -> None:
    first, second = "ovl-A-7f3c9e21-", "7f3c9e21-B-overlap-tail"   # the second begins inside the first
    register_secret(first)
    register_secret(second)
    line = JsonFormatter("test").format(logging.LogRecord("t", logging.INFO, __file__, 1, "x ovl-A-7f3c9e21-B-overlap-tail y",
                                                          None, None))
    message = json.loads(line)["message"]
    assert message == "x [REDACTED] y"


def test_a_forgotten_secret_is_no_longer_redacted_and_the_others_still_are() -> None:
    dead, alive = "listenkey-dead-0a9b8c7d6e5f", "listenkey-alive-1a2b3c4d5e6f"
    register_secret(dead)
    register_secret(alive)
    forget_secret(dead)
    line = JsonFormatter("test").format(logging.LogRecord("t", logging.INFO, __file__, 1, f"{dead} {alive}", None, None))
    assert json.loads(line)["message"] == f"{dead} [REDACTED]"


def test_logging_stays_fast_with_the_keys_of_thousands_of_accounts() -> None:
    # 2,000 live accounts: an API key, a secret and a listenKey each. Redaction cost must not grow with them,
    # or every cycle's log lines become the executor's bottleneck (they did: 86 % of its CPU at 10,000 bots).
    for account in range(2000):
        for kind in ("key", "secret", "listen"):
            register_secret(f"bench-{kind}-{account:05d}-{'x' * 40}")
    formatter = JsonFormatter("executor")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "cycle done for bench-key-00042-" + "x" * 40, None, None)
    record.account, record.reason, record.symbol = "acct-42", "stream caught up within 2 s", "BTCUSDT"
    started = time.perf_counter()
    for _ in range(500):
        line = formatter.format(record)
    elapsed = time.perf_counter() - started
    assert "bench-key-00042" not in line and "[REDACTED]" in line
    assert elapsed < 1.0, f"500 log lines took {elapsed:.2f} s with 6,000 registered secrets"
