"""The dashboard's HTML: plain server-rendered pages, every value escaped, forms for every action.

No script runs in these pages (the CSP forbids it): charts are inline SVG (``svg.py``), confirmations are a
second page, and each form that changes something carries the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from services.common.bot_documents import PRESET_NAMES
from services.gateway.dashboard import svg
from services.gateway.dashboard.reads import BOT_STATUSES

STATUS_COLOURS = {"successful": "#1a7f37", "skipped": "#9a6700", "failed": "#cf222e"}
NAV = (("Fleet", "/dashboard"), ("Bots", "/dashboard/bots"), ("Accounts", "/dashboard/accounts"),
       ("Calibration", "/dashboard/calibration"))


def e(value: Any) -> str:
    return "" if value is None else escape(str(value))


def when(iso: str | None) -> str:
    """An ISO UTC time as operators read it: 2026-12-05 09:44:13Z."""
    return "" if not iso else e(iso[:19].replace("T", " ") + "Z")


def _page(title: str, body: str, *, csrf: str | None = None, active: str = "") -> str:
    nav = ""
    if csrf is not None:
        links = "".join(f'<a href="{href}"{" class=active" if label == active else ""}>{label}</a>'
                        for label, href in NAV)
        nav = (f'<nav>{links}<form method="post" action="/dashboard/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{e(csrf)}">'
               f'<button id="logout" type="submit">Log out</button></form></nav>')
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · tradebot</title><link rel="stylesheet" href="/dashboard/static/dashboard.css">'
            f"</head><body><header><h1>tradebot</h1>{nav}</header><main>{body}</main></body></html>")


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str = "Nothing yet") -> str:
    head = "".join(f"<th>{e(header)}</th>" for header in headers)
    cells = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not cells:
        cells = f'<tr><td colspan="{len(headers)}" class="muted">{e(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>'


def _pager(base: str, params: Mapping[str, str], data: Mapping[str, Any], shown: int) -> str:
    def link(key: str, value: str, label: str) -> str:
        query = urlencode({**{name: text for name, text in params.items() if text}, key: value})
        return f'<a id="page-{key}" href="{base}?{e(query)}">{label}</a>'
    previous = link("before", data["previous"], "&larr; previous") if data.get("previous") else ""
    following = link("after", data["next"], "next &rarr;") if data.get("next") else ""
    return f'<p class="pager">{previous} <span>{shown} shown of {data["total"]}</span> {following}</p>'


def login(message: str | None, login_csrf: str, enabled: bool) -> str:
    note = f'<p class="error" id="login-error">{e(message)}</p>' if message else ""
    if not enabled:
        note += '<p class="error">The dashboard is off: set DASHBOARD_PASSWORD on the gateway.</p>'
    return _page("Log in", f"""<section class="login"><h2>Operator login</h2>{note}
<form id="login-form" method="post" action="/dashboard/login">
<input type="hidden" name="login_csrf" value="{e(login_csrf)}">
<label>Password <input id="password" name="password" type="password" autocomplete="current-password" required
 autofocus></label><button id="login-button" type="submit">Log in</button></form></section>""")


def message(title: str, text: str, csrf: str | None) -> str:
    return _page(title, f'<section><h2>{e(title)}</h2><p id="message">{e(text)}</p>'
                        f'<p><a href="/dashboard">Back to the fleet</a></p></section>', csrf=csrf)


# --- fleet ------------------------------------------------------------------------------------------------

def fleet(data: Mapping[str, Any], csrf: str) -> str:
    ticks = data["ticks"]
    labels = [str(tick.get("finishedAt") or "") for tick in ticks]
    summaries = [tick["summary"] for tick in ticks]
    charts = "".join([
        _figure("Tick duration (s)", svg.line_chart("Tick duration", [svg.Series(
            "seconds", "#0969da", [tick.get("durationSeconds") for tick in ticks])], " s", labels=labels)),
        _figure("Bots by result", svg.stacked_bars("Bots by result", [
            svg.Series(name, colour, [summary.get(name) or 0 for summary in summaries])
            for name, colour in STATUS_COLOURS.items()], labels=labels)),
        _figure("IP weight per minute", svg.line_chart("IP weight", [
            svg.Series("IP used (X-MBX-USED-WEIGHT-1M)", "#8250df", [tick["weight"].get("ipUsed") for tick in ticks]),
            svg.Series("market data planned", "#0969da", [tick["weight"].get("planned") for tick in ticks]),
        ], labels=labels)),
        _figure("AI confirmations", svg.line_chart("AI calls", [
            svg.Series("asked", "#0969da", [tick["aiCalls"].get("requested") for tick in ticks]),
            svg.Series("fell back", "#cf222e", [tick["aiCalls"].get("fallbacks") for tick in ticks]),
        ], labels=labels)),
    ])
    alerts = _table("alerts", ["Alert", "Severity", "What", "From"], (
        [f"<strong>{e(alert['name'])}</strong>", e(alert["severity"]), e(alert["summary"]), e(alert["source"])]
        for alert in data["alerts"]), empty="No alert")
    statuses = " · ".join(f"{e(status)} {count}" for status, count in data["botsByStatus"].items()) or "no bots"
    problems = _table("problems", ["When", "Severity", "Action", "Message"], (
        [when(row["at"]), e(row["severity"]), e(row["action"]), _bot_link(row["botInstanceId"], row["message"])]
        for row in data["problems"]), empty="No error in 24 h")
    return _page("Fleet", f"""<section id="fleet"><h2>Fleet</h2><p id="bot-counts">Bots: {statuses}</p>
{_controls(data["controls"], csrf)}<h3>Current alerts</h3>{alerts}<h3>Last ticks</h3><div class="charts">{charts}</div>
<h3>Errors in the last 24 h</h3>{problems}</section>""", csrf=csrf, active="Fleet")


def _figure(caption: str, chart: str) -> str:
    return f"<figure>{chart}<figcaption>{e(caption)}</figcaption></figure>"


def _bot_link(bot_id: str | None, text: str) -> str:
    return f'<a href="/dashboard/bots/{e(bot_id)}">{e(text)}</a>' if bot_id and bot_id != "None" else e(text)


def _controls(controls: Mapping[str, Any], csrf: str) -> str:
    breaker = controls["circuitBreaker"]
    if controls["halted"]:
        halt = controls["fleetHalt"]
        state = (f'<p id="halt-state" class="halted">HALTED since {when(halt["since"])} by {e(halt["by"])}: '
                 f'{e(halt["reason"])}{" (flattening positions)" if halt.get("flatten") else ""}</p>')
    else:
        state = '<p id="halt-state" class="trading">TRADING: new entries allowed</p>'
    if breaker.get("open"):
        state += (f'<p id="breaker-state" class="halted">Circuit breaker OPEN until {when(breaker.get("until"))}: '
                  f'{e(breaker.get("reason"))}</p>')
    else:
        state += '<p id="breaker-state" class="trading">Circuit breaker closed</p>'
    for row in controls["userHalts"]:
        state += (f'<form method="post" action="/dashboard/resume" class="control user-halt">'
                  f'<input type="hidden" name="csrf" value="{e(csrf)}"><input type="hidden" name="user" '
                  f'value="{e(row["userId"])}"><span class="halted">User {e(row["userId"])} HALTED since '
                  f'{when(row["since"])} by {e(row["by"])}: {e(row["reason"])}</span>'
                  f'<button type="submit">Resume this user…</button></form>')
    halt_form = f"""<form method="post" action="/dashboard/halt" class="control">
<input type="hidden" name="csrf" value="{e(csrf)}"><label>Reason <input id="halt-reason" name="reason" required
 maxlength="500" placeholder="why trading stops"></label><label>User <input id="halt-user" name="user" size="26"
 placeholder="empty: the whole fleet"></label><label><input type="checkbox" name="flatten" value="yes">
 also close every open position</label><button id="halt-button" type="submit" class="danger">Halt trading…</button></form>"""
    resume_form = f"""<form method="post" action="/dashboard/resume" class="control">
<input type="hidden" name="csrf" value="{e(csrf)}"><button id="resume-button" type="submit">Resume trading…</button>
</form>"""
    return f'<div id="controls" class="panel"><h3>Trading controls</h3>{state}{halt_form}{resume_form}</div>'


def _scope(user: object | None) -> str:
    return "the whole fleet" if user is None else f"user {e(user)}"


def _user_field(user: object | None) -> str:
    return "" if user is None else f'<input type="hidden" name="user" value="{e(user)}">'


def confirm_halt(reason: str, flatten: bool, positions: int, csrf: str, user: object | None = None) -> str:
    flattening = (f"<p><strong>Every open position ({positions} of ACTIVE bots) will be closed</strong> with a "
                  "reduce-only market order in its bot's next cycle.</p>") if flatten else (
        f"<p>Open positions ({positions}) stay open, monitored and protected by their stop-loss and take-profit.</p>")
    return _page("Confirm halt", f"""<section><h2>Halt trading for {_scope(user)}?</h2>
<p>No bot opens a new position from its next cycle on, on every replica, until someone resumes.</p>{flattening}
<p>Reason: <em id="confirm-reason">{e(reason)}</em></p>
<form method="post" action="/dashboard/halt"><input type="hidden" name="csrf" value="{e(csrf)}">
<input type="hidden" name="reason" value="{e(reason)}"><input type="hidden" name="confirm" value="yes">
{'<input type="hidden" name="flatten" value="yes">' if flatten else ""}{_user_field(user)}
<button id="confirm-halt" type="submit" class="danger">Yes, halt trading</button> <a href="/dashboard">Cancel</a>
</form></section>""", csrf=csrf)


def confirm_resume(controls: Mapping[str, Any], csrf: str, user: object | None = None) -> str:
    lifts = []
    if user is not None:
        lifts += [f"the halt of user {e(user)} ({e(row['reason'])})" for row in controls["userHalts"]
                  if row["userId"] == str(user)]
    else:
        if controls["halted"]:
            lifts.append(f"the fleet halt ({e(controls['fleetHalt']['reason'])})")
        if controls["circuitBreaker"].get("open"):
            lifts.append(f"the open circuit breaker ({e(controls['circuitBreaker'].get('reason'))})")
    what = " and ".join(lifts) if lifts else f"nothing: {_scope(user)} is not halted"
    return _page("Confirm resume", f"""<section><h2>Resume trading?</h2><p>This lifts {what}. Bots may open new
positions from their next cycle on.</p><form method="post" action="/dashboard/resume">
<input type="hidden" name="csrf" value="{e(csrf)}"><input type="hidden" name="confirm" value="yes">{_user_field(user)}
<button id="confirm-resume" type="submit">Yes, resume trading</button> <a href="/dashboard">Cancel</a></form>
</section>""", csrf=csrf)


# --- bots -------------------------------------------------------------------------------------------------

def bots(data: Mapping[str, Any], filters: Mapping[str, str], csrf: str) -> str:
    def options(values: Iterable[tuple[str, str]], chosen: str) -> str:
        return '<option value="">any</option>' + "".join(
            f'<option value="{e(value)}"{" selected" if value == chosen else ""}>{e(label)}</option>'
            for value, label in values)
    form = f"""<form id="bot-filters" method="get" action="/dashboard/bots" class="filters">
<label>Status <select name="status" id="filter-status">{options(((s, s) for s in BOT_STATUSES), filters.get("status", ""))}
</select></label><label>Strategy <select name="strategy" id="filter-strategy">{options(
        ((str(number), f"{number} {name}") for number, name in PRESET_NAMES.items()), filters.get("strategy", ""))}
</select></label><label>Symbol <input name="symbol" id="filter-symbol" value="{e(filters.get("symbol", ""))}" size="12">
</label><label>User <input name="user" id="filter-user" value="{e(filters.get("user", ""))}" size="26"></label>
<button type="submit" id="filter-button">Filter</button></form>"""
    rows = ([f'<a href="/dashboard/bots/{e(bot["botInstanceId"])}">{e(bot["botName"]) or "(unnamed)"}</a>',
             e(bot["status"]), e(bot["strategy"]), e(bot["symbol"]), e(bot["interval"]),
             _position_text(bot["position"]), when(bot["lastRunAt"]), e(bot["lastError"]), e(bot["userId"])]
            for bot in data["bots"])
    table = _table("bots-table", ["Bot", "Status", "Strategy", "Symbol", "Interval", "Position", "Last run",
                                  "Last error", "User"], rows, empty="No bot matches")
    return _page("Bots", f'<section id="bots"><h2>Bots</h2>{form}{table}'
                         f'{_pager("/dashboard/bots", filters, data, len(data["bots"]))}</section>',
                 csrf=csrf, active="Bots")


def _position_text(position: Mapping[str, Any] | None) -> str:
    if not position:
        return '<span class="muted">flat</span>'
    return (f'{e(position["side"])} {e(position["quantity"])} @ {e(position["entryPrice"])} '
            f'(PnL {e(position["pnl"])})')


def bot(data: Mapping[str, Any], csrf: str) -> str:
    info = data["bot"]
    signals = data["signals"]
    labels = [str(signal["at"]) for signal in signals]
    price = svg.price_chart("Price and signals", [float(signal["price"]) for signal in signals],
                            [signal["action"] for signal in signals],
                            [signal["confidence"] for signal in signals], labels=labels)
    curve = data["pnlCurve"]
    pnl = svg.line_chart("Cumulative realised PnL", [svg.Series(
        "realised PnL (USDT)", "#1a7f37", [float(point["cumulativePnl"]) for point in curve])],
        floor_zero=False, labels=[str(point["at"]) for point in curve])
    trades = _table("trades", ["When", "Action", "Side", "Quantity", "Price", "Realised PnL", "Message"], (
        [when(trade["at"]), e(trade["action"]), e(trade["side"]), e(trade["quantity"]), e(trade["price"]),
         e(trade["realizedPnl"]), e(trade["message"])] for trade in reversed(data["trades"])), empty="No trade yet")
    errors = _table("errors", ["When", "Severity", "Action", "Message"], (
        [when(row["at"]), e(row["severity"]), e(row["action"]), e(row["message"])] for row in data["errors"]),
        empty="No error")
    recent = _table("signals", ["When", "Signal", "Confidence", "AI", "Decision"], (
        [when(signal["at"]), e(signal["action"]), e(signal["confidence"]), e(signal["ai"]), e(signal["decision"])]
        for signal in list(reversed(signals))[:20]), empty="No analysis yet")
    return _page(info["botName"] or "Bot", f"""<section id="bot-page"><h2>{e(info["botName"])}</h2>
<p>{e(info["status"])} · {e(info["strategy"])} · {e(info["symbol"])} {e(info["interval"])}
· user {e(info["userId"])} · position: {_position_text(info["position"])}</p>
<div class="charts">{_figure("Price at each analysis; BUY/SELL signals sized by confidence", price)}
{_figure("Realised PnL, cumulative", pnl)}</div><h3>Trades</h3>{trades}<h3>Last errors</h3>{errors}
<h3>Last signals</h3>{recent}</section>""", csrf=csrf, active="Bots")


# --- accounts ---------------------------------------------------------------------------------------------

def accounts(data: Mapping[str, Any], csrf: str) -> str:
    rows = ([_bot_link(row["botInstanceId"], row["botName"]), e((row["account"] or {}).get("mode")),
             e((row["account"] or {}).get("connectionId")), e(row["userId"]), _position_text(row["position"]),
             e(row["position"]["stopLoss"]), e(row["position"]["takeProfit"]),
             f'<span class="verdict {e(row["audit"]["verdict"].lower().replace(" ", "-"))}">'
             f'{e(row["audit"]["verdict"])}</span>', when(row["audit"]["lastAuditAt"]),
             e((row["audit"]["lastEvent"] or {}).get("message"))]
            for row in data["positions"])
    table = _table("positions", ["Bot", "Mode", "Connection", "User", "Position", "Stop-loss", "Take-profit",
                                 "Protection", "Last audited", "Last audit event"], rows, empty="No open position")
    events = _table("audit-events", ["When", "Severity", "Action", "Message"], (
        [when(row["at"]), e(row["severity"]), e(row["action"]), _bot_link(row["botInstanceId"], row["message"])]
        for row in data["auditEvents"]), empty="No protective-order event in 24 h")
    return _page("Accounts", f"""<section id="accounts"><h2>Open positions and their protection</h2>{table}
{_pager("/dashboard/accounts", {}, data, len(data["positions"]))}
<h3>Protective-order audit: events in the last 24 h</h3>{events}</section>""", csrf=csrf, active="Accounts")


# --- calibration ------------------------------------------------------------------------------------------

def calibration(data: Mapping[str, Any], csrf: str) -> str:
    blocks = []
    for report in data["strategies"]:
        rows = ([e(bucket["confidence"]), e(bucket["trades"]), f'{bucket["winRate"]:.0%}',
                 f'{bucket["winRate95"][0]:.0%}–{bucket["winRate95"][1]:.0%}', f'{bucket["meanR"]:+.2f}',
                 "–" if bucket["meanRLower90"] is None else f'{bucket["meanRLower90"]:+.2f}',
                 "yes" if bucket["earns"] else "no"]
                for bucket in report["buckets"])
        blocks.append(f"""<article class="strategy"><h3>{e(report["strategy"])}</h3>
{svg.reliability_diagram(f"Reliability of {report['strategy']}", report["reliability"])}
{_table("calibration-" + e(report["strategy"]).replace(" ", "-").lower(), ["Confidence %", "Trades", "Win rate",
        "95 % Wilson", "EV (R)", "EV 90 % low", "Earns"], rows)}<p class="verdict">{e(report["verdict"])}</p></article>""")
    body = "".join(blocks) or '<p class="muted">No closed trade linked to its opening signal yet.</p>'
    older = (f"; {data['olderTrades']} older trades were logged before signals were stored: "
             "<code>tradebot calibration</code> links them too") if data.get("olderTrades") else ""
    return _page("Calibration", f"""<section id="calibration"><h2>Calibration of the signals' confidence</h2>
<p>{e(data["linkedTrades"])} closed trades linked to the signal that opened them ({e(data["unlinkedTrades"])} not
usable{older}). A calibrated strategy's points lie on the diagonal; the suggested threshold is the lowest confidence whose
expected value is above zero with 90 % confidence.</p>{body}</section>""", csrf=csrf, active="Calibration")
