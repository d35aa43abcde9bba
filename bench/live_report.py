"""The live benchmark's outputs: live.json (the rows), live-details.json, the checks and the weight plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR

LIVE_JSON = RESULTS_DIR / "live.json"
LIVE_DETAILS_JSON = RESULTS_DIR / "live-details.json"
LIVE_PLOT = RESULTS_DIR / "live-weight.png"
IP_LIMIT_1M = 2400
STEADY_TICK_TARGET_S = {10000: 120.0}


def merge(previous: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The new populations' rows replace theirs; other populations' rows stay."""
    sizes = {row["bots"] for row in new}
    return sorted([row for row in previous if row["bots"] not in sizes] + list(new),
                  key=lambda row: (row["bots"], row["tick"]))


def load(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return rows if isinstance(rows, list) else []


def write(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    return path


def checks(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The issue's targets, per row: no 429/418, nothing sent after a 429, the IP under 2,400, every bot served
    from tick 2 on, and the 10,000-bot tick under 120 s from tick 2 on."""
    results = []
    for row in rows:
        label = f"{row['bots']:>6} bots, {row['accounts']:>5} accounts, tick {row['tick']}"
        results.append((f"{label}: no 429/418, none sent after a 429",
                        row["answered_429"] == row["answered_418"] == row["sent_after_429"] == 0))
        results.append((f"{label}: peak weight {row['peak_used_weight_1m']} <= {IP_LIMIT_1M}",
                        row["peak_used_weight_1m"] <= IP_LIMIT_1M))
        if row["tick"] >= 2:
            results.append((f"{label}: served {row['served']} of {row['bots']}, skipped {row['skipped']}, "
                            f"failed {row['failed']}", row["served"] == row["bots"]))
            target = STEADY_TICK_TARGET_S.get(row["bots"])
            if target is not None:
                results.append((f"{label}: {row['tick_seconds']} s < {target:.0f} s", row["tick_seconds"] < target))
    return results


def checks_text(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f"[{'PASS' if passed else 'MISS'}] {text}" for text, passed in checks(rows))


def plot(rows: Sequence[dict[str, Any]], details: Sequence[dict[str, Any]], path: Path = LIVE_PLOT) -> Path:
    """Weight spent per tick against live accounts: first contact (tick 1) and the ticks after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spent = {(item["accounts"], item["tick"]): item["weight_used"] for item in details}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    first = sorted((accounts, weight) for (accounts, tick), weight in spent.items() if tick == 1)
    later: dict[int, list[int]] = {}
    for (accounts, tick), weight in spent.items():
        if tick >= 2:
            later.setdefault(accounts, []).append(weight)
    steady = sorted((accounts, max(weights)) for accounts, weights in later.items())
    peaks = sorted({(row["accounts"], row["peak_used_weight_1m"]) for row in rows})
    if first:
        axes.plot([a for a, _ in first], [w for _, w in first], "o-", label="weight spent, tick 1 (first contact)")
    if steady:
        axes.plot([a for a, _ in steady], [w for _, w in steady], "s-", label="weight spent, ticks 2+ (largest)")
    if peaks:
        axes.plot([a for a, _ in peaks], [w for _, w in peaks], "^", label="peak weight in any minute")
    axes.axhline(IP_LIMIT_1M, color="red", linewidth=0.8, linestyle=":", label="Binance limit (2,400 / min / IP)")
    axes.set_xscale("log")
    axes.set_xlabel("live accounts behind one IP (5 bots each)")
    axes.set_ylabel("request weight")
    axes.set_title("Binance request weight per tick, measured (make bench LIVE=1)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as the README shows them."""
    columns = ("bots", "accounts", "tick", "tick_seconds", "served", "skipped", "failed", "peak_used_weight_1m",
               "answered_429", "answered_418", "sent_after_429", "rest_requests", "ws_connections")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
