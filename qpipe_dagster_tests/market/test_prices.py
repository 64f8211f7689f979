"""Price files: mapped by name, sorted, de-duplicated, and every defect named with its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import qpipe_dagster
from qpipe_dagster.market.prices import PriceFileError, find_price_file, load_prices

SHARED_MARKET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "market"
DEMO_DIR = Path(qpipe_dagster.__file__).parent / "demo" / "prices"
HOURLY = (
    "datetime,open,high,low,close,volume\n"
    "2024-01-01 00:00:00+00:00,100,101,99,100.5,10\n"
    "2024-01-01 01:00:00+00:00,100.5,102,100,101.5,11\n"
    "2024-01-01 02:00:00+00:00,101.5,103,101,102.5,12\n"
)


def write(tmp_path: Path, text: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hourly_csv_exact_schema(tmp_path: Path) -> None:
    data = load_prices(write(tmp_path, HOURLY))
    assert data.frame.schema == pl.Schema(
        {
            "ts": pl.Datetime("us", "UTC"),
            **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
        }
    )
    assert data.frame["close"].to_list() == [100.5, 101.5, 102.5]
    r = data.report
    assert (r["rows"], r["duplicates_dropped"], r["was_unsorted"], r["gap_count"]) == (
        3,
        0,
        False,
        0,
    )
    assert r["bar_interval_s"] == 3600.0 and r["first_ts"] == "2024-01-01T00:00:00+00:00"


def test_columns_mapped_by_name_any_case_and_order(tmp_path: Path) -> None:
    text = "Date,Close,High,Low,Open,Volume\n2024-01-01,10,11,9,9.5,5\n2024-01-02,11,12,10,10,6\n"
    data = load_prices(write(tmp_path, text))
    assert data.frame["open"].to_list() == [9.5, 10.0]
    assert data.frame["close"].to_list() == [10.0, 11.0]
    assert data.report["bar_interval_s"] == 86400.0


def test_adj_close_and_missing_volume(tmp_path: Path) -> None:
    text = "Timestamp,OPEN,HIGH,LOW,Adj Close\n2024-01-01T00:00:00Z,1,2,0.5,1.5\n"
    data = load_prices(write(tmp_path, text))
    assert data.frame["close"].to_list() == [1.5]
    assert data.frame["volume"].to_list() == [0.0]


@pytest.mark.parametrize(
    "stamps",
    [
        ["1704067200", "1704070800"],  # epoch seconds
        ["1704067200000", "1704070800000"],  # epoch milliseconds
        ["2024-01-01 02:00:00+02:00", "2024-01-01T01:00:00Z"],  # offsets
        ["2024-01-01 00:00:00", "2024-01-01 01:00:00"],  # naive = UTC
    ],
)
def test_timestamp_formats_all_mean_utc(tmp_path: Path, stamps: list[str]) -> None:
    rows = "".join(f"{s},1,1,1,1,1\n" for s in stamps)
    data = load_prices(write(tmp_path, "ts,open,high,low,close,volume\n" + rows))
    assert data.frame["ts"].dt.epoch("s").to_list() == [1704067200, 1704070800]


def test_unsorted_duplicates_and_gaps_reported(tmp_path: Path) -> None:
    text = (
        "datetime,open,high,low,close\n"
        "2024-01-01 02:00,3,3,3,3\n"
        "2024-01-01 00:00,1,1,1,1\n"
        "2024-01-01 01:00,2,2,2,2\n"
        "2024-01-01 01:00,9,9,9,9\n"  # duplicate: the later line wins
        "2024-01-01 03:00,4,4,4,4\n"
        "2024-01-01 08:00,5,5,5,5\n"  # a 5 h gap
    )
    data = load_prices(write(tmp_path, text))
    assert data.frame["close"].to_list() == [1.0, 9.0, 3.0, 4.0, 5.0]
    r = data.report
    assert r["was_unsorted"] is True and r["duplicates_dropped"] == 1
    assert (r["gap_count"], r["largest_gap_s"], r["bar_interval_s"]) == (1, 18000.0, 3600.0)
    assert r["source"] == str(tmp_path / "p.csv")


def test_parquet_with_native_datetimes(tmp_path: Path) -> None:
    frame = load_prices(write(tmp_path, HOURLY)).frame
    pq = tmp_path / "p.parquet"
    frame.rename({"ts": "Datetime", "close": "Close"}).write_parquet(pq)
    assert load_prices(pq).frame.equals(frame)
    naive = tmp_path / "naive.parquet"
    frame.with_columns(pl.col("ts").dt.replace_time_zone(None)).write_parquet(naive)
    assert load_prices(naive).frame.equals(frame)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datetime,open,high,low,volume\n2024-01-01,1,1,1,1\n", "missing column 'close'"),
        ("open,high,low,close\n1,1,1,1\n", "missing column 'ts'"),
        ("ts,open,high,low,close\n2024-01-01,1,1,1,1\n2024-01-02,1,1,1,\n", "row 2 has NaN close"),
        ("ts,open,high,low,close\n2024-01-01,1,1,1,NaN\n", "row 1 has NaN close"),
        ("ts,open,high,low,close\n2024-01-01,1,1,1,abc\n", "row 1 has unparseable close 'abc'"),
        (
            "ts,open,high,low,close\n2024-01-01,1,1,1,1\n2024-01-02,1,0,1,1\n",
            "non-positive high 0.0 at 2024-01-02T00:00:00",
        ),
        ("ts,open,high,low,close\n2024-01-01,1,1,1,-5\n", "non-positive close -5.0"),
        ("ts,open,high,low,close,volume\n2024-01-01,1,1,1,1,-1\n", "negative volume"),
        ("ts,open,high,low,close\nyesterday,1,1,1,1\n", "row 1: unparseable timestamp 'yesterday'"),
        ("ts,open,high,low,close\n2024-01-01,1,1,1,inf\n", "row 1 has infinite close"),
        ("ts,open,high,low,close\n2024-01-01,1e400,1,1,1\n", "row 1 has infinite open"),
        (
            "ts,open,high,low,close\n99999999999999999999999,1,1,1,1\n",
            "row 1: timestamp '99999999999999999999999' is outside years 1..9999",
        ),
        ("ts,open,high,low,close\n-99999999999,1,1,1,1\n", "row 1: timestamp .* outside years"),
        ("ts,open,high,low,close\n", "empty file"),
        ("", "empty file"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "bad.csv")
    with pytest.raises(PriceFileError, match=message) as info:
        load_prices(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("column", "dtype"),
    [
        (pl.Series("close", [True, True]), "Boolean"),
        (pl.struct(pl.lit(1.0).alias("a")).alias("close"), "Struct"),
    ],
)
def test_parquet_non_numeric_price_column_is_named(
    tmp_path: Path, column: pl.Series | pl.Expr, dtype: str
) -> None:
    """A boolean close must not become 1.0, nor a struct column a polars traceback."""
    frame = load_prices(write(tmp_path, HOURLY)).frame.head(2).with_columns(column)
    path = tmp_path / "odd.parquet"
    frame.write_parquet(path)
    with pytest.raises(PriceFileError, match=f"column 'close' is not numeric \\({dtype}"):
        load_prices(path)


def test_wrong_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match=r"unsupported extension '\.json'"):
        load_prices(write(tmp_path, HOURLY, "p.json"))
    with pytest.raises(PriceFileError, match="file not found"):
        load_prices(tmp_path / "nope.csv")
    with pytest.raises(PriceFileError, match="cannot read as parquet"):
        load_prices(write(tmp_path, HOURLY, "fake.parquet"))


def test_find_price_file_variants(tmp_path: Path) -> None:
    for name in ("BTC_USD_daily.csv", "BTC_USD.csv", "ETH-USD.parquet", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert find_price_file("BTC-USD", tmp_path).name == "BTC_USD.csv"
    (tmp_path / "BTC_USD_hourly.csv").write_text("x")
    assert find_price_file("btc-usd", tmp_path).name == "BTC_USD_hourly.csv"
    assert find_price_file("ETH_USD", tmp_path).name == "ETH-USD.parquet"
    with pytest.raises(PriceFileError, match=r"no price file for 'SOL-USD'.*found: .*BTC_USD.csv"):
        find_price_file("SOL-USD", tmp_path)
    with pytest.raises(PriceFileError, match="invalid symbol"):
        find_price_file("../etc", tmp_path)
    with pytest.raises(PriceFileError, match="price directory not found"):
        find_price_file("BTC-USD", tmp_path / "missing")


def test_demo_prices_are_real_recent_hourly_bars() -> None:
    path = find_price_file("BTC-USD", DEMO_DIR)
    data = load_prices(path)
    assert data.report["rows"] == 4000 and data.report["gap_count"] == 0
    close = data.frame["close"].to_numpy()
    assert 1_000 < np.median(close) < 1_000_000


def test_real_shared_files_load() -> None:
    if not SHARED_MARKET.is_dir():
        pytest.skip(f"real market data not present at {SHARED_MARKET}")
    daily = load_prices(SHARED_MARKET / "BTC_USD_daily.csv")
    hourly = load_prices(find_price_file("BTC-USD", SHARED_MARKET))
    assert daily.report["bar_interval_s"] == 86400.0
    assert hourly.report["bar_interval_s"] == 3600.0 and hourly.report["rows"] > 30_000
    demo = load_prices(DEMO_DIR / "BTC-USD.csv").frame
    assert hourly.frame.tail(4000).equals(demo)
