"""The ``tradebot`` entry point: argparse sub-commands, one handler each.

Exit codes: 0 done; 1 the command could not be carried out (not found,
gateway down, a bot failed in ``tick``); 2 the command line is wrong
(invalid value, missing variable). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from services.backtest.cli import add_backtest_parser
from services.cli import bots, calibration, controls, credentials, logs, ops, webhooks
from services.cli.bot_config import INTERVALS
from services.cli.errors import CliError

Handler = Callable[[argparse.Namespace], int]


def _users(commands: argparse._SubParsersAction) -> None:
    user = commands.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    create = user.add_parser("create", help="create a user (minimal: email, optional name)")
    create.add_argument("--email", required=True)
    create.add_argument("--name")
    create.set_defaults(handler=bots.user_create)


def _bots(commands: argparse._SubParsersAction) -> None:
    bot = commands.add_parser("bot", help="bot instances").add_subparsers(dest="action", required=True)
    create = bot.add_parser("create", help="create an ACTIVE bot from a preset (1-4)")
    create.add_argument("--user-id", required=True)
    create.add_argument("--preset", required=True, type=int, help="1 Bitcoin Pro, 2 Safe Trader, 3 Trend Rider, "
                        "4 Range Scalper")
    create.add_argument("--symbol", required=True, help="USDⓈ-M futures symbol, e.g. BTCUSDT")
    create.add_argument("--name", help="botName (default: the preset's name)")
    create.add_argument("--connection-id", help="exchangeConnectionId (default: the user's single active one)")
    create.add_argument("--config", help='JSON object of config settings, e.g. \'{"leverage": 5}\'')
    create.add_argument("--leverage", help="1..125 (default 10)")
    create.add_argument("--stop-loss", help="stopLossPercent: price distance from the entry fill, >0 and <100 "
                        "(default 3)")
    create.add_argument("--take-profit", help="takeProfitPercent: price distance from the entry fill, >0 and "
                        "<=100 (default 6)")
    create.add_argument("--position-size", help="positionSizePercent of available balance used as margin, >0 and "
                        "<=100 (default 10)")
    create.add_argument("--max-daily-loss", help="maxDailyLoss in USDT, >0 (default 100)")
    create.add_argument("--interval", choices=INTERVALS, help="candle interval (default 5m)")
    create.add_argument("--confidence-threshold", help="orders only above this confidence, 0..100 (default 70)")
    create.add_argument("--max-consecutive-losses", help="pause after this many losses in a row (default 3)")
    create.set_defaults(handler=bots.bot_create)

    listing = bot.add_parser("list", help="table of bots: status, position, PnL, win rate, last signal")
    listing.add_argument("--user-id")
    listing.add_argument("--status", choices=("ACTIVE", "PAUSED", "STOPPED", "ERROR"))
    listing.set_defaults(handler=bots.bot_list)

    for action, target, text in (("pause", "PAUSED", "pause an ACTIVE bot (ticks skip it)"),
                                 ("resume", "ACTIVE", "make a PAUSED/STOPPED/ERROR bot ACTIVE again"),
                                 ("stop", "STOPPED", "stop a bot for good (its open position is not closed)")):
        parser = bot.add_parser(action, help=text)
        parser.add_argument("bot_id")
        if action == "resume":
            parser.add_argument("--reset-losses", action="store_true",
                                help="set statistics.consecutiveLosses to 0 (after a consecutive-loss pause)")
        parser.set_defaults(handler=lambda args, target=target: bots.bot_set_status(args, target))


def _logs(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("logs", help="TradeLog entries, oldest first; --follow for new ones")
    parser.add_argument("--bot", help="botInstanceId")
    parser.add_argument("--user-id")
    parser.add_argument("--type", help=", ".join(logs.LOG_TYPES))
    parser.add_argument("--severity", help=", ".join(logs.SEVERITIES))
    parser.add_argument("--limit", type=int, default=50, help="latest N entries (default 50)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new entries (Ctrl-C stops)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls in --follow mode")
    parser.set_defaults(handler=logs.logs)


def _operations(commands: argparse._SubParsersAction) -> None:
    tick = commands.add_parser("tick", help="run one tick now through the gateway and show its summary")
    tick.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
    tick.set_defaults(handler=ops.tick)
    status = commands.add_parser("status", help="monitoring report (the gateway's /api/status, else the database)")
    status.add_argument("--local", action="store_true", help="compute from MongoDB without asking the gateway")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=ops.status)


def _credentials(commands: argparse._SubParsersAction) -> None:
    connection = commands.add_parser("connection", help="exchange connections").add_subparsers(
        dest="action", required=True)
    add = connection.add_parser("add", help="store a Binance connection with encrypted keys (prompts for them)")
    add.add_argument("--user-id", required=True)
    add.add_argument("--mode", required=True, choices=credentials.MODES)
    add.add_argument("--api-key-stdin", action="store_true",
                     help="read the API key and secret as two lines from stdin instead of prompting")
    add.set_defaults(handler=credentials.connection_add)
    keys = commands.add_parser("keys", help="credential encryption keys").add_subparsers(dest="action", required=True)
    rotate = keys.add_parser("rotate", help="re-encrypt every connection under the first CREDENTIALS_KEYS key")
    rotate.set_defaults(handler=credentials.keys_rotate)


def _webhooks(commands: argparse._SubParsersAction) -> None:
    webhook = commands.add_parser("webhook", help="event notifications").add_subparsers(dest="action", required=True)
    add = webhook.add_parser("add", help="register a URL for TRADE, SAFETY and ERROR events")
    owner = add.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user-id")
    owner.add_argument("--operator", action="store_true",
                       help="an operator's webhook: halts, resumes and circuit breaker trips of the whole fleet")
    add.add_argument("--bot-id", help="only this bot's events (default: every bot of the user)")
    add.add_argument("--url", required=True)
    add.add_argument("--events", help="comma-separated subset of TRADE,SAFETY,ERROR (default all)")
    add.set_defaults(handler=webhooks.webhook_add)
    listing = webhook.add_parser("list", help="registered webhooks (secrets are not shown)")
    listing.add_argument("--user-id")
    listing.set_defaults(handler=webhooks.webhook_list)
    disable = webhook.add_parser("disable", help="stop sending to a webhook")
    disable.add_argument("webhook_id")
    disable.set_defaults(handler=webhooks.webhook_disable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradebot",
        description="Manage trading bots: users, bots, exchange connections, logs, ticks, status, halts, webhooks, "
        "backtests, calibration. "
        "Reads MONGODB_URI/MONGODB_DB; CREDENTIALS_KEYS for connection/keys; GATEWAY_URL with CRON_SECRET "
        "for tick and STATUS_TOKEN for status.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _users(commands)
    _bots(commands)
    _logs(commands)
    _operations(commands)
    controls.add_parsers(commands)
    _credentials(commands)
    _webhooks(commands)
    add_backtest_parser(commands)
    calibration.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as error:
        print(f"tradebot: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
