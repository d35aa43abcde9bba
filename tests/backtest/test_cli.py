"""``tradebot backtest`` through its real entry point, and byte-identical reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "BTCUSDT-5m-2025-05-sample.csv"
TRADEBOT = Path(sys.executable).with_name("tradebot")
REPORT_FILES = ("summary.json", "trades.csv", "equity.png")
ARGS = ["backtest", "--preset", "2", "--symbol", "BTCUSDT", "--interval", "5m", "--csv", str(FIXTURE),
        "--config", '{"confidenceThreshold": 50}']


def test_the_installed_command_writes_the_report_and_a_second_run_is_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    done = subprocess.run([str(TRADEBOT), *ARGS, "--out", str(first)], capture_output=True, text=True, timeout=90,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Safe Trader on BTCUSDT 5m:" in done.stdout
    assert "100%" in done.stderr                           # the progress bar finished
    summary = json.loads((first / "summary.json").read_text())
    assert summary["trades"] >= 1 and summary["reproducible"] is True
    assert summary["parameters"]["config"]["confidenceThreshold"] == 50
    trades = (first / "trades.csv").read_text().splitlines()
    assert trades[0].startswith("openTime,closeTime,side,entryPrice") and len(trades) == summary["trades"] + 1
    assert (first / "equity.png").read_bytes().startswith(b"\x89PNG")

    # Same inputs in another process (this one): the same bytes, PNG included.
    assert main([*ARGS, "--out", str(second), "--quiet"]) == 0
    for name in REPORT_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.parametrize(("extra", "message"), [
    (["--preset", "7"], "preset must be one of 1, 2, 3, 4"),
    (["--config", '{"leverage": 500}'], "leverage"),
    (["--fee-taker", "-1"], "--fee-taker must be zero or positive"),
    (["--step", "5 minutes"], "--step must look like"),
    (["--start", "2030-01-01"], "no step falls inside the period"),
])
def test_bad_values_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                     message: str) -> None:
    assert main([*ARGS, *extra, "--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_candle_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["backtest", "--preset", "1", "--symbol", "BTCUSDT", "--csv", str(missing), "--out",
                 str(tmp_path), "--quiet"]) == 2
    assert f"candle file not found: {missing}" in capsys.readouterr().err
