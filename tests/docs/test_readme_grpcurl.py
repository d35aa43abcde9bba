"""Every grpcurl command in README.md runs, as written, against the real services.

The README's ```bash blocks are parsed into shell commands (line continuations,
multi-line quoted JSON and heredocs included); each command that calls grpcurl
runs through bash with the real grpcurl binary against real market, strategy
and executor processes started with `make run`'s launcher and offline defaults
(simulated market, no OpenAI key, a paper connection). Only the ports (the
processes listen on free ports) and the documented <PLACEHOLDERS> are
substituted. A grpcurl line that breaks, or an RPC the README forgets, fails here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymongo import MongoClient
from tradebot.v1 import executor_pb2, market_pb2, strategy_pb2

from services.devstack.seed import PRESET_BOTS, bot_document, user_document
from services.devstack.stack import Stack, StackConfig, StackPorts
from services.executor.admin import connection_document
from tests.support.grpcurl import grpcurl_path

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_PORTS = {"50051": "market", "50052": "strategy", "50053": "executor"}
ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):(5005[123])\b")
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
RPC = re.compile(r"\b((?:tradebot\.v1|grpc\.health\.v1)\.\w+)/(\w+)\b")


# ---------------------------------------------------------------- parsing the README


def bash_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash fenced blocks, in order."""
    blocks: list[str] = []
    body: list[str] | None = None
    for line in markdown.splitlines():
        stripped = line.strip()
        if body is None:
            if stripped.startswith("```") and stripped[3:].strip() in ("bash", "sh", "shell"):
                body = []
        elif stripped.startswith("```"):
            blocks.append("\n".join(body))
            body = None
        else:
            body.append(line)
    return blocks


def _complete(text: str) -> bool:
    """Whether ``text`` is a whole shell command: no trailing backslash, quotes closed, heredocs ended."""
    if text.rstrip().endswith("\\"):
        return False
    for match in HEREDOC.finditer(text):
        rest = text[match.end():].split("\n")[1:]
        if not any(line.strip() == match.group(1) for line in rest):
            return False
    try:
        shlex.split(text.split("<<")[0] if "<<" in text else text, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def shell_commands(block: str) -> list[str]:
    commands: list[str] = []
    pending: list[str] = []
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending.append(line)
        text = "\n".join(pending)
        if _complete(text):
            commands.append(text)
            pending = []
    assert not pending, f"unterminated command in a README bash block:\n{chr(10).join(pending)}"
    return commands


def pipeline_segments(command: str) -> list[list[str]]:
    """The simple commands of a pipeline/list as token lists (comments and heredoc bodies dropped)."""
    head = command.split("<<")[0] if HEREDOC.search(command) else command
    lexer = shlex.shlex(head, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in ("|", "||", "&&", ";", "&", "(", ")"):
            segments.append([])
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


def grpcurl_calls(command: str) -> list[list[str]]:
    return [segment for segment in pipeline_segments(command) if Path(segment[0]).name == "grpcurl"]


def readme_grpcurl_commands() -> list[str]:
    markdown = README.read_text(encoding="utf-8")
    return [command for block in bash_blocks(markdown) for command in shell_commands(block) if grpcurl_calls(command)]


def all_rpcs() -> set[str]:
    """Every RPC of the contract, plus the standard health check."""
    names = {"grpc.health.v1.Health/Check"}
    for module in (market_pb2, strategy_pb2, executor_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"{service.full_name}/{method.name}" for method in service.methods}
    return names


# ---------------------------------------------------------------- the stack and its data


@dataclass(frozen=True)
class Documented:
    ports: StackPorts
    values: dict[str, str]  # placeholder name -> value

    def substitute(self, command: str) -> str:
        command = ADDRESS.sub(lambda m: f"127.0.0.1:{self.ports.grpc(DOCUMENTED_PORTS[m.group(1)])}", command)
        return PLACEHOLDER.sub(lambda m: self.values.get(m.group(1), m.group(0)), command)


@pytest.fixture(scope="module")
def documented(mongo_uri: str) -> Iterator[Documented]:
    fernet_key = Fernet.generate_key().decode()
    database = f"readme_{uuid.uuid4().hex[:10]}"
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    db = client[database]
    # What `make run` seeds on an empty database: a user, a paper connection, a preset bot.
    user = user_document()
    db.users.insert_one(user)
    connection = connection_document(user["_id"], "paper", "", "", Fernet(fernet_key.encode()))
    connection_id = db.exchangeconnections.insert_one(connection).inserted_id
    bot = bot_document(user["_id"], PRESET_BOTS[0])
    db.botinstances.insert_one(bot)
    config = StackConfig(
        mongodb_uri=mongo_uri,
        cron_secret=secrets.token_urlsafe(36),
        credentials_keys=fernet_key,
        mongodb_db=database,
        ports=StackPorts.free(),
        env={"*": {"OPENAI_API_KEY": "", "LOG_LEVEL": "WARNING"}},  # the offline defaults, whatever the shell has
        startup_timeout=30.0,
    )
    stack = Stack(config)
    try:
        stack.start_services()
        yield Documented(config.ports, {
            "BOT_INSTANCE_ID": str(bot["_id"]),
            "USER_ID": str(user["_id"]),
            "CONNECTION_ID": str(connection_id),
        })  # fmt: skip
    finally:
        stack.stop()
        client.drop_database(database)
        client.close()


def run_shell(command: str) -> subprocess.CompletedProcess[str]:
    """bash runs the command as a reader would paste it; `grpcurl` is the real binary."""
    tools = os.pathsep.join(dict.fromkeys([str(Path(grpcurl_path()).parent), str(Path(sys.executable).parent)]))
    env = {**os.environ, "PATH": tools + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", command], capture_output=True, text=True,
                          timeout=20, env=env, check=False)  # fmt: skip


# ---------------------------------------------------------------- what a sane answer is

def is_decimal_string(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None


# What each RPC's answer must look like on the offline stack (an RPC not listed: any JSON object).
SANE_ANSWERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "grpc.health.v1.Health/Check": lambda a: a.get("status") == "SERVING",
    "tradebot.v1.MarketData/GetCandles": lambda a: len(a.get("candles", [])) > 0
    and all(is_decimal_string(c.get("close")) for c in a["candles"]),
    "tradebot.v1.MarketData/GetPrice": lambda a: is_decimal_string(a.get("price")),
    "tradebot.v1.MarketData/GetSymbolFilters": lambda a: is_decimal_string(a.get("tick_size"))
    and is_decimal_string(a.get("step_size")),
    "tradebot.v1.MarketData/GetStats": lambda a: a.get("source") in ("simulated", "binance"),
    "tradebot.v1.Strategy/ListStrategies": lambda a: {s["bot_id"] for s in a.get("strategies", [])} == {1, 2, 3, 4},
    "tradebot.v1.Strategy/Analyze": lambda a: a.get("signal", {}).get("action")
    in ("ACTION_BUY", "ACTION_SELL", "ACTION_HOLD") and bool(a.get("indicators")),
    "tradebot.v1.Executor/RunCycle": lambda a: bool(a.get("decision")) and is_decimal_string(a.get("available_balance")),
    "tradebot.v1.Executor/GetPosition": lambda a: is_decimal_string(a.get("available_balance")),
}


def check_answer(command: str, stdout: str) -> None:
    words = grpcurl_calls(command)[-1]
    if "list" in words:
        listed = set(stdout.split())
        assert "grpc.health.v1.Health" in listed or RPC.search(command), stdout
        assert any(name.startswith(("tradebot.v1.", "grpc.")) for name in listed), stdout
        return
    if "describe" in words:
        assert re.search(r"\bis a (service|message|method)\b", stdout), stdout
        return
    rpcs = RPC.findall(" ".join(words))
    assert rpcs, f"a grpcurl command that is neither list, describe nor an RPC call:\n{command}"
    answer = json.loads(stdout)
    assert isinstance(answer, dict), stdout
    service, method = rpcs[-1]
    sane = SANE_ANSWERS.get(f"{service}/{method}", lambda a: True)
    assert sane(answer), f"{service}/{method} answered:\n{stdout}"


# ---------------------------------------------------------------- the tests

COMMANDS = readme_grpcurl_commands()


def test_the_readme_documents_every_rpc_with_grpcurl() -> None:
    called = {f"{service}/{method}" for command in COMMANDS for service, method in RPC.findall(command)}
    missing = all_rpcs() - called
    assert not missing, f"README.md has no grpcurl example for: {sorted(missing)}"
    texts = " ".join(COMMANDS)
    assert re.search(r"grpcurl\b[^\n]*\blist\b", texts) and re.search(r"grpcurl\b[^\n]*\bdescribe\b", texts)


def test_every_readme_grpcurl_command_uses_a_documented_port_in_plaintext() -> None:
    for command in COMMANDS:
        for call in grpcurl_calls(command):
            assert "-plaintext" in call, command
            assert any(ADDRESS.fullmatch(token) for token in call), f"no localhost:5005x address in:\n{command}"


@pytest.mark.parametrize("command", COMMANDS, ids=[f"cmd{i:02d}" for i in range(len(COMMANDS))])
def test_readme_grpcurl_command_runs(command: str, documented: Documented) -> None:
    runnable = documented.substitute(command)
    unknown = PLACEHOLDER.findall(runnable)
    assert not unknown, f"undocumented placeholders {unknown} in:\n{command}"
    result = run_shell(runnable)
    assert result.returncode == 0, f"exit {result.returncode}\n{command}\nstderr: {result.stderr}\nstdout: {result.stdout}"
    check_answer(command, result.stdout)


def test_the_parser_sees_continuations_quotes_and_heredocs() -> None:
    block = (
        "# a comment\n"
        "grpcurl -plaintext \\\n  localhost:50051 list\n"
        "grpcurl -plaintext -d '{\n  \"symbol\": \"BTCUSDT\"\n}' localhost:50051 tradebot.v1.MarketData/GetPrice\n"
        "grpcurl -plaintext -d @ localhost:50051 tradebot.v1.MarketData/GetPrice <<EOF\n{\"symbol\": \"X\"}\nEOF\n"
        "echo done\n"
    )
    commands = shell_commands(block)
    assert len(commands) == 4
    assert commands[0].endswith("list") and "GetPrice" in commands[1] and commands[2].endswith("EOF")
