"""The benchmark end to end on a small population: both settings, the JSON it writes, exact upstream counts.

20 bots over 5 symbols (four strategies, one interval): the project's tick
asks the fake Binance server for candles once per (symbol, interval) and
the fake OpenAI server once per (strategy, symbol, interval) with a BUY/SELL
signal; the seed-style baseline asks once per bot. Latencies are lowered so
the test stays fast; the counts do not depend on them.
"""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.e2e

ROW_FIELDS = {
    "bots", "symbols", "setting", "tick_seconds", "db_seconds", "kline_requests", "distinct_symbol_intervals",
    "ai_calls", "weight_used", "peak_rss_mb", "peak_rss_mb_by_process", "distinct_buy_sell_groups",
    "buy_sell_analyses", "mongo_round_trips", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "estimated",
    "bots_per_second", "ai_tokens", "cpu_seconds_by_process",
}  # fmt: skip


def test_bench_measures_both_settings_and_writes_results(tmp_path, capsys):
    code = main(["--bots", "20", "--symbols", "5", "--binance-latency-ms", "5", "--openai-latency-ms", "50",
                 "--no-backtest", "--out", str(tmp_path)])  # fmt: skip

    assert code == 0
    document = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest-plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    project, baseline = document["rows"]
    for row in (project, baseline):
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert row["bots"] == 20 and row["symbols"] == 5 and row["estimated"] is False
        assert row["summary"]["totalBots"] == 20 and row["summary"]["failed"] == 0, row["summary"]
        assert row["tick_seconds"] > 0 and 0 < row["db_seconds"] < row["tick_seconds"]
        assert set(row["peak_rss_mb_by_process"]) == {"market", "strategy", "executor", "gateway", "mongo"}
        assert row["peak_rss_mb"] == max(row["peak_rss_mb_by_process"].values())
        assert row["distinct_symbol_intervals"] == 5
        # Counted on the wire by each service's command listener.
        assert row["mongo_round_trips"]["gateway"]["by_command"]["update botinstances"] == 2   # lease + results
        assert row["mongo_round_trips"]["executor"]["total"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"] < row["tick_seconds"] * 1000
    assert (project["setting"], baseline["setting"]) == ("project", "baseline")

    # Grouped: one candle request per (symbol, interval), one AI call per BUY/SELL group.
    assert project["kline_requests"] == 5
    assert project["ai_calls"] == project["distinct_buy_sell_groups"] == project["buy_sell_analyses"]
    if project["ai_calls"]:
        assert project["ai_tokens"] > 0   # read from the strategy service's /metrics
    # Baseline (no market cache): one candle request and one analysis per bot, and the executor's own
    # candle read for each paper position it simulates stops on; every BUY/SELL analysis asks the AI.
    assert baseline["kline_requests"] == 20 + baseline["bots_with_positions"]
    assert baseline["ai_calls"] == baseline["buy_sell_analyses"]
    assert baseline["weight_used"] > project["weight_used"] > 0
    assert project["speedup"] == pytest.approx(baseline["tick_seconds"] / project["tick_seconds"], rel=0.05)

    targets = {(item["target"], item["passed"]) for item in document["targets"]}
    assert ("kline requests == distinct (symbol, interval)", True) in targets
    printed = capsys.readouterr().out
    assert "baseline" in printed and "[PASS]" in printed
