"""Odd price files written to disk and fed through `load_prices`: each is either read right or
refused with the file and the row/column/value named (never a library traceback)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from qpipe_dagster.concepts import Concept, default_registry
from qpipe_dagster.defs.io import ArrowIPCIOManager
from qpipe_dagster.defs.resources import ConceptRegistryResource, PriceSourceResource
from qpipe_dagster.defs.validation import market_prices
from qpipe_dagster.market.prices import PriceFileError, find_price_file, load_prices

HEADER = "ts,open,high,low,close,volume\n"
ROWS = "2024-01-01 00:00,1,2,0.5,1.5,10\n2024-01-01 01:00,1.5,2.5,1,2,11\n"


def write(tmp_path: Path, data: str | bytes, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refused(path: Path, message: str) -> str:
    with pytest.raises(PriceFileError, match=message) as info:
        load_prices(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    return text


@pytest.mark.parametrize(
    "data",
    [
        HEADER + ROWS,
        "\ufeff" + HEADER + ROWS,  # UTF-8 BOM (Excel)
        (HEADER + ROWS).replace("\n", "\r\n"),  # Windows line endings
        " TS , Open , HIGH , low , Close , Volume \n" + ROWS,  # case and spaces in the header
        (HEADER + ROWS).replace(",", ";"),  # semicolon-delimited (European exports)
        (HEADER + ROWS).replace(",", "\t"),  # tab-delimited
    ],
    ids=["plain", "bom", "crlf", "header-case-spaces", "semicolon", "tab"],
)
def test_dialects_read_the_same(tmp_path: Path, data: str) -> None:
    frame = load_prices(write(tmp_path, data)).frame
    assert frame["close"].to_list() == [1.5, 2.0]
    assert frame["volume"].to_list() == [10.0, 11.0]
    assert frame["ts"].dt.epoch("s").to_list() == [1704067200, 1704070800]


@pytest.mark.parametrize(
    "header",
    [
        "ts,open,high,low,close,close\n",
        "ts,open,high,low,close,Close\n",
        "ts,open,high,low,close, CLOSE\n",
    ],
)
def test_a_price_column_given_twice_is_refused(tmp_path: Path, header: str) -> None:
    """Two close columns used to load silently from the first one."""
    path = write(tmp_path, header + "2024-01-01,1,1,1,1,2\n2024-01-02,1,1,1,1,2\n")
    refused(path, r"column 'close' appears 2 times \(\['close', '\s?(close|Close|CLOSE)'\]\)")


def test_a_price_column_given_twice_in_parquet_is_refused(tmp_path: Path) -> None:
    ts = pa.array([dt.datetime(2024, 1, 1, h) for h in range(2)], pa.timestamp("us"))
    one = pa.array([1.0, 2.0])
    table = pa.Table.from_arrays(
        [ts, one, one, one, one, pa.array([9.0, 9.0])],
        names=["ts", "open", "high", "low", "close", "CLOSE"],
    )
    pq.write_table(table, tmp_path / "p.parquet")
    refused(tmp_path / "p.parquet", r"column 'close' appears 2 times \(\['close', 'CLOSE'\]\)")


def test_unused_duplicate_columns_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "ts,open,high,low,close,note,note\n2024-01-01,1,1,1,1,a,b\n")
    assert load_prices(path).frame["close"].to_list() == [1.0]


def test_separate_date_and_time_columns_are_refused(tmp_path: Path) -> None:
    """Taking Date alone used to collapse each day's hourly bars into one (keep last)."""
    text = "Date,Time,Open,High,Low,Close\n2024-01-01,00:00,1,1,1,1\n2024-01-01,01:00,2,2,2,2\n"
    refused(write(tmp_path, text), "separate 'Date' and 'Time' columns; combine them")


def test_mixed_epoch_units_are_refused(tmp_path: Path) -> None:
    """Seconds and milliseconds in one column used to put the seconds rows in January 1970."""
    text = HEADER + "1704067200,1,1,1,1,1\n1704070800000,1,1,1,1,1\n"
    refused(
        write(tmp_path, text),
        "mixed epoch units: row 1 '1704067200' reads as seconds, "
        "row 2 '1704070800000' as milliseconds",
    )


@pytest.mark.parametrize(
    "stamps",
    [
        ["1704067200000000", "1704070800000000"],  # microseconds
        ["1704067200000000000", "1704070800000000000"],  # nanoseconds
    ],
)
def test_epoch_micro_and_nanoseconds(tmp_path: Path, stamps: list[str]) -> None:
    text = HEADER + "".join(f"{s},1,1,1,1,1\n" for s in stamps)
    frame = load_prices(write(tmp_path, text)).frame
    assert frame["ts"].dt.epoch("s").to_list() == [1704067200, 1704070800]


def test_iso_timestamp_before_year_1_is_named(tmp_path: Path) -> None:
    """Year 0 parsed, then failed in the report with a bare 'year 0 is out of range'."""
    text = HEADER + "2024-01-01,1,1,1,1,1\n0000-01-01,1,1,1,1,1\n"
    refused(write(tmp_path, text), r"row 2: timestamp '0000-01-01' is outside years 1\.\.9999")


def test_row_with_extra_fields_is_named(tmp_path: Path) -> None:
    """Polars' own text ('consider truncate_ragged_lines') named neither the row nor the line."""
    text = HEADER + "2024-01-01,1,1,1,1,1\n2024-01-02,1,1,1,1,1,\n"
    message = refused(write(tmp_path, text), r"row 2 \(line 3\) has 7 fields, the header has 6")
    assert "truncate_ragged_lines" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEADER + ",1,1,1,1,1\n", "row 1: missing timestamp"),
        (HEADER + "2024-01-01,1,1,1,1,1\n\n2024-01-03,1,1,1,1,1\n", "row 2: missing timestamp"),
        (HEADER + '2024-01-01,"1,000",1,1,1,1\n', "row 1 has unparseable open '1,000'"),
        ("ts;open;high;low;close\n2024-01-01;1,5;1;1;1\n", "row 1 has unparseable open '1,5'"),
    ],
    ids=["empty-ts", "blank-line", "thousands-separator", "decimal-comma"],
)
def test_bad_cells_are_named(tmp_path: Path, text: str, message: str) -> None:
    refused(write(tmp_path, text), message)


def test_nan_timestamp_in_parquet_is_shown_plainly(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": [1704067200.0, float("nan")],
            **{c: [1.0, 1.0] for c in ("open", "high", "low", "close")},
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    message = refused(tmp_path / "p.parquet", "row 2: unparseable timestamp nan$")
    assert "np.float64" not in message


def test_directory_named_like_a_price_file(tmp_path: Path) -> None:
    """Used to say 'file not found' about something that exists."""
    (tmp_path / "BTC-USD.csv").mkdir()
    refused(tmp_path / "BTC-USD.csv", "is a directory, not a price file")


def test_corrupt_and_truncated_parquet_are_named(tmp_path: Path) -> None:
    table = pa.table({"ts": [1704067200, 1704070800], **{c: [1.0, 2.0] for c in "ohlc"}})
    pq.write_table(table, tmp_path / "good.parquet")
    good = (tmp_path / "good.parquet").read_bytes()
    refused(write(tmp_path, good[: len(good) // 2], "cut.parquet"), "cannot read as parquet")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["BTC-USD.csv", "BTC_USD.csv"],
            "2 price files .* match 'BTC-USD' equally: BTC-USD.csv, BTC_USD.csv",
        ),
        (
            ["BTC_USD_4h.csv", "BTC_USD_daily.csv"],
            "match 'BTC-USD' equally: BTC_USD_4h.csv, BTC_USD_daily.csv",
        ),
    ],
)
def test_price_files_that_tie_for_a_symbol_are_refused(
    tmp_path: Path, names: list[str], message: str
) -> None:
    """The alphabetically first one used to be backtested without a word."""
    for name in names:
        write(tmp_path, HEADER + ROWS, name)
    with pytest.raises(PriceFileError, match=message):
        find_price_file("BTC-USD", tmp_path)
    write(tmp_path, HEADER + ROWS, "BTC_USD_hourly.parquet")  # a clear winner settles it
    assert find_price_file("BTC-USD", tmp_path).name == "BTC_USD_hourly.parquet"


def test_bad_price_file_fails_the_market_prices_run_naming_it(
    dagster_home: Path, tmp_path: Path
) -> None:
    """Through a real Dagster run: the step fails with the loader's message, file included."""
    prices = tmp_path / "prices"
    prices.mkdir()
    path = write(prices, HEADER + "1704067200,1,1,1,1,1\n1704070800000,1,1,1,1,1\n", "TEST-USD.csv")
    default_registry().upsert(Concept.create("bad", symbol="TEST-USD"))
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["bad"])
        result = materialize(
            [market_prices],
            partition_key="bad",
            instance=instance,
            resources={
                "concepts": ConceptRegistryResource(),
                "prices": PriceSourceResource(prices_dir=str(prices)),
                "io_manager": ArrowIPCIOManager(base_dir=str(tmp_path / "assets")),
            },
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error.cause  # Dagster wraps the asset's own error
    assert error.cls_name == "PriceFileError"
    assert error.message.startswith(f"qpipe_dagster.market.prices.PriceFileError: {path}: mixed")
