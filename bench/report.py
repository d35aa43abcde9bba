"""The benchmark's outputs: speed-ups, target checks, the printed table, latest.json and the plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
JSON_PATH = RESULTS_DIR / "latest.json"
PLOT_PATH = RESULTS_DIR / "latest-plot.png"

TICK_TARGETS = {1000: 15.0, 10000: 120.0}   # bots -> tick seconds
MIN_SPEEDUP_AT_1000 = 20.0
MAX_RSS_MB_AT_10000 = 500.0


def add_speedups(rows: list[dict[str, Any]]) -> None:
    baseline = {row["bots"]: row for row in rows if row["setting"] == "baseline"}
    for row in rows:
        if row["setting"] == "project" and row["bots"] in baseline and row["tick_seconds"]:
            other = baseline[row["bots"]]
            row["speedup"] = round(other["tick_seconds"] / row["tick_seconds"], 1)
            row["speedup_estimated"] = bool(other.get("estimated"))
            # mongoeco's writes are far slower than MongoDB's: the same ratio without database time.
            outside_db = row["tick_seconds"] - row["db_seconds"]
            if outside_db > 0:
                row["speedup_excluding_db"] = round((other["tick_seconds"] - other["db_seconds"]) / outside_db, 1)


def check_targets(rows: Sequence[dict[str, Any]], weight_budget: int) -> list[dict[str, Any]]:
    """One entry per target and population: what was required, what was measured, pass or miss."""
    checks: list[dict[str, Any]] = []

    def check(bots: int, target: str, required: str, measured: Any, passed: bool) -> None:
        checks.append({"bots": bots, "target": target, "required": required, "measured": measured, "passed": passed})

    for row in rows:
        if row["setting"] != "project":
            continue
        bots = row["bots"]
        check(bots, "kline requests == distinct (symbol, interval)", str(row["distinct_symbol_intervals"]),
              row["kline_requests"], row["kline_requests"] == row["distinct_symbol_intervals"])
        check(bots, "AI calls <= distinct (strategy, symbol, interval) with BUY/SELL",
              f"<= {row['distinct_buy_sell_groups']}", row["ai_calls"],
              row["ai_calls"] <= row["distinct_buy_sell_groups"])
        check(bots, "weight within budget", f"<= {weight_budget}", row["weight_used"], row["weight_used"] <= weight_budget)
        if bots in TICK_TARGETS:
            limit = TICK_TARGETS[bots]
            check(bots, "tick seconds", f"< {limit}", row["tick_seconds"], row["tick_seconds"] < limit)
        if bots == 1000 and "speedup" in row:
            label = "speed-up vs baseline" + (" (baseline estimated)" if row.get("speedup_estimated") else "")
            check(bots, label, f">= {MIN_SPEEDUP_AT_1000}", row["speedup"], row["speedup"] >= MIN_SPEEDUP_AT_1000)
        if bots == 10000:
            check(bots, "peak RSS of every process (MB)", f"< {MAX_RSS_MB_AT_10000}", row["peak_rss_mb"],
                  row["peak_rss_mb"] < MAX_RSS_MB_AT_10000)
    return checks


COLUMNS = (
    ("bots", "bots", "{}"),
    ("setting", "setting", "{}"),
    ("tick_seconds", "tick s", "{:.2f}"),
    ("db_seconds", "db s", "{:.2f}"),
    ("bots_per_second", "bots/s", "{}"),
    ("kline_requests", "klines", "{}"),
    ("distinct_symbol_intervals", "sym×int", "{}"),
    ("ai_calls", "AI", "{}"),
    ("distinct_buy_sell_groups", "BUY/SELL grp", "{}"),
    ("weight_used", "weight", "{}"),
    ("peak_rss_mb", "peak RSS MB", "{}"),
    ("latency", "cycle ms p50/95/99", "{:.0f}"),
    ("speedup", "speed-up", "{}x"),
)
ESTIMATED_COLUMNS = ("tick_seconds", "kline_requests", "ai_calls", "weight_used", "bots_per_second")


def _cells(row: dict[str, Any]) -> list[str]:
    cells = []
    for key, _, fmt in COLUMNS:
        if key == "latency":   # the per-bot cycle percentiles in one cell
            values = [row.get(f"latency_p{p}_ms") for p in (50, 95, 99)]
            cell = "/".join(fmt.format(v) for v in values) if all(v is not None for v in values) else ""
        else:
            value = row.get(key)
            cell = "" if value is None else fmt.format(value)
        if row.get("estimated") and key in ESTIMATED_COLUMNS:
            cell += "*"
        cells.append(cell)
    return cells


def table(rows: Sequence[dict[str, Any]]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [_cells(row) for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=False)]
    lines = [" | ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)) for cells in [header, *body]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    if any(row.get("estimated") for row in rows):
        lines.append("* estimated: baseline measured on a random sample of the population and scaled linearly")
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def checks_text(checks: Sequence[dict[str, Any]]) -> str:
    return "\n".join(
        f"[{'PASS' if item['passed'] else 'MISS'}] {item['bots']:>6} bots: {item['target']}: "
        f"measured {item['measured']} (required {item['required']})"
        for item in checks
    )


def write_json(document: dict[str, Any], path: Path = JSON_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def plot(rows: Sequence[dict[str, Any]], path: Path = PLOT_PATH) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for setting, style in (("project", "o-"), ("baseline", "s--")):
        points = sorted((row["bots"], row["tick_seconds"], row.get("estimated", False))
                        for row in rows if row["setting"] == setting)  # fmt: skip
        if not points:
            continue
        axes.plot([p[0] for p in points], [p[1] for p in points], style, label=setting)
        for bots, seconds, estimated in points:
            if estimated:
                axes.annotate("estimated", (bots, seconds), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.axhline(270, color="grey", linewidth=0.8, linestyle=":", label="tick deadline (270 s)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("ACTIVE bots")
    axes.set_ylabel("tick wall time (s)")
    axes.set_title("One tick: project settings vs seed-style baseline")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
