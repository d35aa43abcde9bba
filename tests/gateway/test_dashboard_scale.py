"""The dashboard at 10,000 bots: every page answers in under a second, and every query it sends has an index.

The test database is mongoeco's memory engine, which scans: its times are an upper bound for what MongoDB 7
does with the indexes. The index check is what holds on MongoDB: each query the dashboard sends on the
growing collections (tradelogs, botinstances) must start with the first key of one of its indexes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring

from services.gateway.dashboard.reads import INDEXES
from services.gateway.dashboard.settings import DashboardSettings
from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_dashboard import PASSWORD, browser, log_in

BOTS = 10_000
PAGE_BUDGET_SECONDS = 1.0
WATCHED = ("tradelogs", "botinstances")


class QueryRecorder(monitoring.CommandListener):
    """The find/count/aggregate commands sent on the watched collections while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name in ("find", "aggregate", "count"):
            if event.command.get(event.command_name) in WATCHED:
                self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


RECORDER = QueryRecorder()
monitoring.register(RECORDER)   # pymongo listeners are global: it records only while a test turns it on


def _fields(query: dict[str, Any]) -> list[set[str]]:
    """The field sets an index may serve: one per branch of a top-level $or, with the other fields."""
    common = {name for name in query if not name.startswith("$")}
    for clause in query.get("$and", []):
        for branch in _fields(clause):
            common |= branch
    branches = [common | fields for clause in query.get("$or", []) for fields in _fields(clause)]
    return branches or [common]


def _uses_an_index(collection: str, query: dict[str, Any], sort: dict[str, Any]) -> bool:
    first_keys = {"_id"} | {index.document["key"].keys().__iter__().__next__() for index in INDEXES[collection]}
    return all(fields & first_keys for fields in _fields(query)) or (not query and set(sort) & first_keys)


def _seed(db: Any, user: ObjectId) -> ObjectId:
    now = datetime.now(UTC)
    symbols = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
    bots = []
    for number in range(BOTS):
        position = {"symbol": symbols[number % 5], "side": "LONG", "quantity": 0.01, "entryPrice": 60000.0,
                    "stopLoss": 59000.0, "takeProfit": 62000.0, "leverage": 5, "pnl": 1.0, "pnlPercent": 0.1,
                    "openTime": now} if number % 5 == 0 else None
        bots.append({"_id": ObjectId(), "userId": ObjectId() if number % 3 else user, "botId": number % 4 + 1,
                     "botName": f"bot {number}", "symbol": symbols[number % 5],
                     "status": "ACTIVE" if number % 10 else "PAUSED", "config": {"interval": "5m"},
                     "currentPosition": position, "statistics": {"totalTrades": 3}, "lastError": None,
                     "lastRunAt": now, "exchangeConnectionId": ObjectId()})
    db.botinstances.insert_many(bots)
    logs = []
    for minutes in (5, 10):   # two analyses per bot
        logs += [{"botInstanceId": bot["_id"], "userId": bot["userId"], "logType": "ANALYSIS", "severity": "INFO",
                  "action": "BUY", "message": "signal", "createdAt": now - timedelta(minutes=minutes),
                  "data": {"strategy": "Bitcoin Pro", "price": "60000", "signal": {"action": "BUY", "confidence": 75},
                           "ai": {"requested": True, "used": False}}} for bot in bots]
    for number, bot in enumerate(bots[:1000]):   # a closed trade, its opening and a problem for one bot in ten
        opened = now - timedelta(minutes=10)
        logs.append({"botInstanceId": bot["_id"], "logType": "TRADE", "severity": "INFO", "action": "OPEN_LONG",
                     "message": "opened", "createdAt": opened, "data": {"stopLoss": "59000"}})
        logs.append({"botInstanceId": bot["_id"], "logType": "TRADE", "severity": "INFO", "action": "CLOSE_POSITION",
                     "message": "closed", "createdAt": now - timedelta(minutes=5),
                     "data": {"entryPrice": "60000", "quantity": "0.01", "realizedPnl": "8.5", "openTime": opened,
                              "openingSignal": {"strategy": "Bitcoin Pro", "confidence": 70 + number % 30,
                                                "aiVerdict": None, "stopLoss": "59000"}}})
        logs.append({"botInstanceId": bot["_id"], "logType": "SAFETY", "severity": "CRITICAL",
                     "action": "STOP_LOSS_RESTORED", "message": "re-placed", "createdAt": now - timedelta(minutes=1)})
    for start in range(0, len(logs), 10_000):
        db.tradelogs.insert_many(logs[start:start + 10_000])
    db.ticks.insert_many([{"tickId": str(number), "startedAt": now, "finishedAt": now - timedelta(minutes=5 * number),
                           "outcome": "ok", "durationSeconds": 40.0 + number % 7,
                           "summary": {"totalBots": BOTS, "successful": 9000, "failed": 0, "skipped": 1000},
                           "aiCalls": {"requested": 12, "used": 12, "fallbacks": 0}, "weight": {"ipUsed": 900}}
                          for number in range(300)])
    return bots[0]["_id"]


@pytest.mark.timeout(300)
async def test_every_page_answers_within_a_second_at_ten_thousand_bots_and_every_query_has_an_index(
        gateway_factory: GatewayFactory):
    async with gateway_factory(dashboard=DashboardSettings(password=PASSWORD)) as gateway, browser(gateway) as http:
        bot_id = _seed(gateway.db, gateway.user_id)
        # The indexes are built at start-up in the background; this start had no bots yet: build them now.
        await gateway.http._transport.app.state.dashboard.ensure_indexes()  # type: ignore[attr-defined]
        assert (await log_in(http)).status_code == 303
        paths = ["/dashboard", "/dashboard/bots", "/dashboard/bots?status=ACTIVE&strategy=2&symbol=ETHUSDT",
                 f"/dashboard/bots?user={gateway.user_id}", f"/dashboard/bots/{bot_id}", "/dashboard/accounts",
                 "/dashboard/calibration", "/dashboard/api/fleet", "/dashboard/api/bots", "/dashboard/api/accounts"]
        RECORDER.active, RECORDER.commands = True, []
        try:
            timings = {}
            for path in paths:
                started = time.perf_counter()
                response = await http.get(path)
                timings[path] = time.perf_counter() - started
                assert response.status_code == 200, path
            # Deep pages cost what the first costs: walk forward 40 pages (2,000 bots) and back one.
            page = (await http.get("/dashboard/api/bots")).json()
            seen = {bot["botInstanceId"] for bot in page["bots"]}
            for _ in range(40):
                started = time.perf_counter()
                page = (await http.get("/dashboard/api/bots", params={"after": page["next"]})).json()
                timings["/dashboard/api/bots?after=…"] = max(timings.get("/dashboard/api/bots?after=…", 0),
                                                             time.perf_counter() - started)
                assert not seen & {bot["botInstanceId"] for bot in page["bots"]}
                seen |= {bot["botInstanceId"] for bot in page["bots"]}
            back = (await http.get("/dashboard/api/bots", params={"before": page["previous"]})).json()
            assert back["bots"] and back["bots"][-1]["botInstanceId"] < page["bots"][0]["botInstanceId"]
        finally:
            RECORDER.active = False
        assert len(seen) == 41 * 50
        slow = {path: round(seconds, 3) for path, seconds in timings.items() if seconds >= PAGE_BUDGET_SECONDS}
        assert not slow, f"pages over {PAGE_BUDGET_SECONDS} s at {BOTS} bots: {slow} (all: {timings})"

        unindexed = []
        for command in RECORDER.commands:
            name = "find" if "find" in command else "aggregate" if "aggregate" in command else "count"
            collection = command[name]
            if name == "find":
                query, sort = command.get("filter", {}), command.get("sort", {})
            elif name == "count":
                if not command.get("query"):
                    continue   # estimated_document_count: the collection's metadata, no document read
                query, sort = command["query"], {}
            else:
                first = command["pipeline"][0]
                if "$group" in first and collection == "botinstances":
                    continue   # status counts: one pass over the fleet, bounded by its size, not by time
                query, sort = first.get("$match", {}), {}
            if not _uses_an_index(collection, query, sort):
                unindexed.append((collection, query, sort))
        assert RECORDER.commands and not unindexed, unindexed
