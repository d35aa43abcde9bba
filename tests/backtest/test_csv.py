"""Binance kline CSV files: with or without header, milliseconds or microseconds, bad rows refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from services.backtest.candles import load_csv, merge
from services.common.errors import InvalidArgument

FIXTURE = Path(__file__).parents[1] / "fixtures" / "BTCUSDT-5m-2025-05-sample.csv"


def _rows() -> list[list[str]]:
    with FIXTURE.open(newline="") as handle:
        return list(csv.reader(handle))


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_the_fixture_reads_as_closed_5m_candles_oldest_first() -> None:
    history = load_csv(FIXTURE, "5m")
    assert len(history) == len(_rows()) - 1          # the header row is not a candle
    first = _rows()[1]
    assert (history.candles[0].open_time_ms, history.candles[0].close) == (int(first[0]), first[4])
    gaps = {b.open_time_ms - a.open_time_ms for a, b in zip(history.candles, history.candles[1:], strict=False)}
    assert gaps == {300_000}


def test_headerless_microsecond_files_give_the_same_candles(tmp_path: Path) -> None:
    # Binance's 2025+ spot files: no header, open/close times in microseconds.
    rows = [[str(int(row[0]) * 1000), *row[1:6], str(int(row[6]) * 1000), *row[7:]] for row in _rows()[1:]]
    micro = load_csv(_write(tmp_path / "micro.csv", rows), "5m")
    assert micro == load_csv(FIXTURE, "5m")


def test_monthly_files_merge_in_time_order(tmp_path: Path) -> None:
    rows = _rows()
    later = _write(tmp_path / "b.csv", [rows[0], *rows[300:]])
    earlier = _write(tmp_path / "a.csv", [rows[0], *rows[1:310]])   # overlapping rows are kept once
    assert merge([load_csv(later, "5m"), load_csv(earlier, "5m")]) == load_csv(FIXTURE, "5m")


@pytest.mark.parametrize(("row", "message"), [
    (["1748526300000", "1", "2", "3"], "12 kline columns"),
    (["soon", "1", "2", "1", "1", "1"], "open_time is not an integer"),
    (["1748526300000", "1", "2", "x", "1", "1"], "not a number"),
    (["1748526300000", "1", "1", "2", "1", "1"], "low must be positive and not above high"),
])
def test_bad_rows_are_refused_with_the_line(tmp_path: Path, row: list[str], message: str) -> None:
    good = ["1748526000000", "1", "1", "1", "1", "1"]
    with pytest.raises(InvalidArgument, match=message) as error:
        load_csv(_write(tmp_path / "bad.csv", [good, row]), "5m")
    assert "line 2" in error.value.message


def test_rows_out_of_order_are_refused(tmp_path: Path) -> None:
    rows = _rows()
    with pytest.raises(InvalidArgument, match="must increase"):
        load_csv(_write(tmp_path / "swapped.csv", [rows[0], rows[2], rows[1]]), "5m")
