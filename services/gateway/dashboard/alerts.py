"""The fleet view's current alerts: the dashboard's own checks on what MongoDB holds, plus Alertmanager's.

The checks mirror the Prometheus rules an operator cares about most (deploy/prometheus/alerts.yml) so the
dashboard says something useful even where no Prometheus runs (``make run``). With ``ALERTMANAGER_URL`` set,
Alertmanager's active alerts (not silenced, not inhibited) are shown as well.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import httpx

log = logging.getLogger(__name__)

ALERTMANAGER_TIMEOUT_SECONDS = 2.0
IP_WEIGHT_LIMIT = 2400
FAILING_SHARE = 0.2
NEAR_DEADLINE_SHARE = 0.8


def _alert(name: str, severity: str, summary: str, source: str = "dashboard") -> dict[str, str]:
    return {"name": name, "severity": severity, "summary": summary, "source": source}


def fleet_checks(ticks: list[dict[str, Any]], controls: dict[str, Any], now: datetime, *,
                 tick_interval_seconds: float, tick_deadline_seconds: float) -> list[dict[str, str]]:
    alerts: list[dict[str, str]] = []
    if controls.get("circuitBreaker", {}).get("open"):
        breaker = controls["circuitBreaker"]
        alerts.append(_alert("CircuitBreakerOpen", "critical",
                             f"Circuit breaker open until {breaker.get('until')}: {breaker.get('reason')}"))
    if controls.get("halted"):
        halt = controls["fleetHalt"]
        alerts.append(_alert("TradingHalted", "warning", f"Trading halted by {halt.get('by')}: {halt.get('reason')}"))
    if controls.get("userHalts"):
        alerts.append(_alert("UsersHalted", "info", f"{len(controls['userHalts'])} user(s) halted"))
    if not ticks:
        alerts.append(_alert("NeverTicked", "warning", "No tick has been recorded yet"))
        return alerts
    last = ticks[-1]
    finished = datetime.fromisoformat(str(last["finishedAt"]).replace("Z", "+00:00")) if last.get("finishedAt") else None
    if finished is None or now - finished > timedelta(seconds=2 * tick_interval_seconds):
        alerts.append(_alert("TickMissed", "critical", f"No tick since {last.get('finishedAt')} "
                                                      f"(expected every {tick_interval_seconds:g} s)"))
    if last.get("outcome") not in ("ok", "no_bots"):
        alerts.append(_alert("TickFailing", "critical", f"The last tick ended {last.get('outcome')}"))
    summary = last.get("summary") or {}
    total = summary.get("totalBots") or 0
    if total and (summary.get("failed") or 0) > FAILING_SHARE * total:
        alerts.append(_alert("BotsFailing", "warning", f"{summary.get('failed')} of {total} bots failed in the last tick"))
    duration = last.get("durationSeconds") or 0
    if duration > NEAR_DEADLINE_SHARE * tick_deadline_seconds:
        alerts.append(_alert("TickNearDeadline", "warning",
                             f"The last tick took {duration:.0f} s of its {tick_deadline_seconds:g} s deadline"))
    ai = last.get("aiCalls") or {}
    if ai.get("requested") and ai.get("fallbacks", 0) * 2 > ai["requested"]:
        alerts.append(_alert("AiFallingBack", "warning",
                             f"AI fell back to indicators for {ai['fallbacks']} of {ai['requested']} analyses"))
    used = (last.get("weight") or {}).get("ipUsed")
    if used and used > NEAR_DEADLINE_SHARE * IP_WEIGHT_LIMIT:
        alerts.append(_alert("IpWeightHigh", "warning", f"The IP used {used} of Binance's {IP_WEIGHT_LIMIT} weight/min"))
    return alerts


async def alertmanager_alerts(base_url: str | None) -> list[dict[str, str]]:
    if not base_url:
        return []
    url = base_url.rstrip("/") + "/api/v2/alerts"
    try:
        async with httpx.AsyncClient(timeout=ALERTMANAGER_TIMEOUT_SECONDS) as client:
            response = await client.get(url, params={"active": "true", "silenced": "false", "inhibited": "false"})
            response.raise_for_status()
            alerts = response.json()
    except (httpx.HTTPError, ValueError) as error:
        log.warning("Alertmanager unreachable", extra={"error": type(error).__name__})
        return [_alert("AlertmanagerUnreachable", "warning", f"Alertmanager did not answer ({type(error).__name__})")]
    shown = []
    for alert in alerts if isinstance(alerts, list) else []:
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        shown.append(_alert(str(labels.get("alertname", "?")), str(labels.get("severity", "")),
                            str(annotations.get("summary") or annotations.get("description") or ""), "alertmanager"))
    return shown
