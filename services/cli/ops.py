"""``tradebot tick`` (run one tick now through the gateway) and ``tradebot status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.cli.context import describe_mongo_error, gateway_url, mongo_settings, require_env, status_token
from services.cli.errors import CliError
from services.gateway.status_report import build_status_report
from services.cli.table import render_table
from services.cli.values import show_amount, show_quantity

TICK_TIMEOUT_SECONDS = 300.0  # the gateway's own deadline is 270 s
_SPINNER = "|/-\\"


async def _progress(started: float) -> None:
    """A spinner with elapsed seconds on a terminal; a dot every 5 s otherwise (logs stay readable)."""
    interactive = sys.stderr.isatty()
    frame = 0
    while True:
        await asyncio.sleep(0.1 if interactive else 5.0)
        elapsed = time.monotonic() - started
        if interactive:
            sys.stderr.write(f"\r{_SPINNER[frame % len(_SPINNER)]} running tick... {elapsed:5.1f}s")
        else:
            sys.stderr.write(".")
        sys.stderr.flush()
        frame += 1


async def _post_tick(url: str, secret: str) -> httpx.Response:
    started = time.monotonic()
    sys.stderr.write(f"running one tick on {url} ")
    sys.stderr.flush()
    spinner = asyncio.create_task(_progress(started))
    try:
        async with httpx.AsyncClient(timeout=TICK_TIMEOUT_SECONDS) as client:
            return await client.post(f"{url}/api/cron/run-bots", headers={"Authorization": f"Bearer {secret}"})
    except httpx.HTTPError as error:
        raise CliError(f"could not reach the gateway at {url}: {type(error).__name__}") from None
    finally:
        spinner.cancel()
        sys.stderr.write(f"\rtick finished in {time.monotonic() - started:.1f}s" + " " * 20 + "\n")
        sys.stderr.flush()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error") or body.get("message") or body) if isinstance(body, dict) else str(body)[:200]


def print_tick_summary(body: dict[str, Any]) -> None:
    summary = body.get("summary") or {}
    counts = ", ".join(f"{key} {summary.get(key, 0)}"
                       for key in ("totalBots", "successful", "failed", "withPositions", "skipped"))
    print(f"tick at {body.get('timestamp', '-')}: {counts}")
    if body.get("message"):
        print(body["message"])
    results = body.get("results") or []
    if not results:
        return
    rows = []
    for item in results:
        confidence = item.get("confidence")
        rows.append([
            item.get("botInstanceId", ""),
            item.get("botName", ""),
            item.get("symbol", ""),
            item.get("status", ""),
            item.get("action") or "-",
            f"{confidence:g}%" if isinstance(confidence, int | float) else "-",
            "yes" if item.get("orderPlaced") else "no",
            "yes" if item.get("hasPosition") else "no",
            item.get("error") or "",
        ])
    print(render_table(["ID", "NAME", "SYMBOL", "STATUS", "ACTION", "CONFIDENCE", "ORDER", "POSITION", "ERROR"], rows))


def tick(args: argparse.Namespace) -> int:
    url = gateway_url()
    secret = require_env("CRON_SECRET", "to run a tick (the gateway's bearer secret)")
    response = asyncio.run(_post_tick(url, secret))
    if response.status_code != 200:
        raise CliError(f"the gateway answered {response.status_code}: {_error_text(response)}")
    body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print_tick_summary(body)
    return 0 if body.get("success", False) and not (body.get("summary") or {}).get("failed") else 1


async def _report_from_gateway(url: str, token: str) -> dict[str, Any] | None:
    """The gateway's report, or None when it has no such route or cannot be reached."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    if response.status_code in (404, 405):
        return None
    if response.status_code != 200:
        raise CliError(f"the gateway answered {response.status_code} to /api/status: {_error_text(response)}")
    return response.json()


async def _report_from_database() -> dict[str, Any]:
    uri, name = mongo_settings()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        return await build_status_report(client[name])
    finally:
        await client.close()


async def _report(local: bool) -> tuple[dict[str, Any], str]:
    url, token = gateway_url(), status_token()
    if not local and token is not None:
        report = await _report_from_gateway(url, token)
        if report is not None:
            return report, f"gateway {url}"
    return await _report_from_database(), "database"


def print_trading_controls(controls: dict[str, Any] | None) -> None:
    if controls is None:   # a gateway that predates the operator controls
        return
    fleet = controls.get("fleetHalt")
    if fleet:
        flatten = ", flattening open positions" if fleet.get("flatten") else ""
        print(f"trading: HALTED for the fleet since {fleet.get('since')} by {fleet.get('by')}: {fleet.get('reason')}"
              f"{flatten}")
    else:
        print("trading: not halted for the fleet")
    for halt in controls.get("userHalts") or []:
        print(f"  user {halt.get('userId')} halted since {halt.get('since')} by {halt.get('by')}: {halt.get('reason')}")
    breaker = controls.get("circuitBreaker") or {}
    if breaker.get("open"):
        print(f"circuit breaker: OPEN until {breaker.get('until')} ({breaker.get('cause')}): {breaker.get('reason')}")
    else:
        print("circuit breaker: closed")


def print_status(report: dict[str, Any], source: str) -> None:
    print(f"status at {report.get('generatedAt', '-')} (from {source})")
    by_status = report.get("botsByStatus") or {}
    print("bots: " + (", ".join(f"{status} {count}" for status, count in by_status.items()) or "none"))
    tick_info = report.get("lastTick")
    if tick_info:
        outcome = f", {tick_info['outcome']}" if tick_info.get("outcome") else ""
        print(f"last tick: {tick_info.get('at', '-')}{outcome}")
    else:
        print("last tick: never")
    print_trading_controls(report.get("tradingControls"))
    counts = report.get("tradeLogsLast24h") or {}
    print("tradelogs in the last 24 h: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
    positions = report.get("openPositions") or []
    print(f"\nopen positions ({len(positions)})")
    if positions:
        print(render_table(
            ["ID", "NAME", "SYMBOL", "SIDE", "QTY", "ENTRY", "UPNL", "UPNL %"],
            [[p.get("botInstanceId"), p.get("botName"), p.get("symbol"), p.get("side"), show_quantity(p.get("quantity")),
              show_amount(p.get("entryPrice")), show_amount(p.get("pnl")), show_amount(p.get("pnlPercent"))]
             for p in positions],
        ))
    realized = report.get("realizedPnlToday") or []
    print(f"\nrealised PnL today (UTC), {len(realized)} bot(s)")
    if realized:
        print(render_table(
            ["ID", "NAME", "CLOSED TRADES", "REALISED PNL"],
            [[r.get("botInstanceId"), r.get("botName") or "", r.get("closedTrades"), show_amount(r.get("realizedPnl"))]
             for r in realized],
        ))


def status(args: argparse.Namespace) -> int:
    try:
        report, source = asyncio.run(_report(args.local))
    except PyMongoError as error:
        raise CliError(f"could not build the status report: {describe_mongo_error(error)}") from None
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_status(report, source)
    return 0
