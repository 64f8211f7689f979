"""Load OHLCV price files (CSV or Parquet) into one strict, sorted, de-duplicated shape.

Columns are mapped by name, case-insensitively, because real exports disagree on order
(`BTC_USD_daily.csv` is ``Date,Close,High,Low,Open,Volume``; the hourly files are
``datetime,open,high,low,close,volume``). Every problem raises `PriceFileError` naming the
file and what is wrong, so a bad download never turns into a silent bad backtest.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import polars as pl

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".csv", ".parquet", ".pq")
TS_NAMES: tuple[str, ...] = ("ts", "datetime", "timestamp", "date", "time")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
CLOSE_FALLBACKS: tuple[str, ...] = ("adj close", "adj_close", "adjclose")
GAP_FACTOR = 1.5  # an interval longer than 1.5x the median bar interval is a gap
_DUPLICATED_RE = re.compile(r"_duplicated_\d+$")  # polars' suffix for a repeated CSV header
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_MIN_US = int(np.datetime64("0001-01-01T00:00:00", "us").astype(np.int64))
_MAX_US = int(np.datetime64("9999-12-31T23:59:59.999999", "us").astype(np.int64))


class PriceFileError(ValueError):
    """A price file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class PriceData:
    """Validated prices: ``frame`` has ts (datetime[us, UTC]) + OHLCV Float64, sorted, unique ts."""

    frame: pl.DataFrame
    report: dict[str, Any]


def _separator(path: Path) -> str:
    """',' unless the header line has none but has ';' or a tab (European/TSV exports, which
    would otherwise load as one column and be refused as missing 'ts')."""
    with path.open("rb") as fh:
        header = fh.readline(65536).decode("utf-8-sig", errors="replace")
    if "," not in header:
        for sep in (";", "\t"):
            if sep in header:
                return sep
    return ","


def _ragged_row(path: Path, separator: str) -> str:
    """Where a CSV row has more fields than its header (polars only says that one does)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=separator)
        width = len(next(reader, []))
        for i, record in enumerate(reader, start=1):
            if len(record) > width:
                return (
                    f"row {i} (line {reader.line_num}) has {len(record)} fields, "
                    f"the header has {width}"
                )
    return "a row has more fields than the header"


def _read_raw(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise PriceFileError(
            f"{path}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if path.is_dir():
        raise PriceFileError(f"{path}: is a directory, not a price file")
    if not path.is_file():
        raise PriceFileError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise PriceFileError(f"{path}: empty file")
    separator = ","
    try:
        if suffix == ".csv":
            separator = _separator(path)
            # all strings: we parse ourselves
            return pl.read_csv(path, infer_schema_length=0, separator=separator)
        return pl.read_parquet(path)
    except pl.exceptions.NoDataError as exc:
        raise PriceFileError(f"{path}: empty file") from exc
    except Exception as exc:  # polars/arrow raise many types for corrupt files
        if suffix == ".csv" and "more fields than defined" in str(exc):
            raise PriceFileError(f"{path}: {_ragged_row(path, separator)}") from exc
        raise PriceFileError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc


def _map_columns(path: Path, columns: list[str]) -> dict[str, str]:
    """Canonical name -> source column, matched case-insensitively after trimming.

    A name we use that matches two columns (``close,Close``, or ``close,close``, which polars
    reads as ``close_duplicated_0``) is refused: taking either would be a guess.
    """
    by_lower: dict[str, list[str]] = {}
    for col in columns:
        key = _DUPLICATED_RE.sub("", col).strip().lower()
        by_lower.setdefault(key, []).append(col)

    def pick(name: str) -> str:
        found = by_lower[name]
        if len(found) > 1:
            shown = [_DUPLICATED_RE.sub("", c) for c in found]
            raise PriceFileError(
                f"{path}: column {name!r} appears {len(found)} times ({shown}); keep one"
            )
        return found[0]

    mapping: dict[str, str] = {}
    ts = next((n for n in TS_NAMES if n in by_lower), None)
    if ts is None:
        raise PriceFileError(
            f"{path}: missing column 'ts' (any of {', '.join(TS_NAMES)}); found {columns}"
        )
    if ts == "date" and "time" in by_lower:
        # taking the date alone would collapse every intraday bar of a day into one
        raise PriceFileError(
            f"{path}: separate {pick('date')!r} and {pick('time')!r} columns; "
            "combine them into one timestamp column (ts, datetime or timestamp)"
        )
    mapping["ts"] = pick(ts)
    for name in PRICE_COLUMNS:
        src = name if name in by_lower else None
        if src is None and name == "close":
            src = next((n for n in CLOSE_FALLBACKS if n in by_lower), None)
        if src is None:
            raise PriceFileError(f"{path}: missing column {name!r}; found {columns}")
        mapping[name] = pick(src)
    if "volume" in by_lower:
        mapping["volume"] = pick("volume")
    return mapping


_EPOCH_UNITS: tuple[tuple[float, float, str], ...] = (
    # (magnitude below, microseconds per unit, name): seconds until year ~5000, then ms, us, ns
    (1e11, 1e6, "seconds"),
    (1e14, 1e3, "milliseconds"),
    (1e17, 1.0, "microseconds"),
    (np.inf, 1e-3, "nanoseconds"),
)


def _show(value: object) -> str:
    """A cell for a message: NumPy scalars as plain Python values (``nan``, not
    ``np.float64(nan)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _bad_ts(path: Path, raw: pl.Series, values: pd.Series, i: int) -> PriceFileError:
    if raw[i] is None:
        return PriceFileError(f"{path}: row {i + 1}: missing timestamp (empty cell)")
    return PriceFileError(f"{path}: row {i + 1}: unparseable timestamp {_show(values.iloc[i])}")


def _check_years(path: Path, us: np.ndarray, values: pd.Series) -> None:
    """Outside years 1..9999 the int64 cast overflows or datetimes cannot be built later."""
    out = (us < _MIN_US) | (us > _MAX_US)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise PriceFileError(
            f"{path}: row {i + 1}: timestamp {_show(values.iloc[i])} is outside years 1..9999"
        )


def _parse_ts(path: Path, raw: pl.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch, UTC (naive strings are UTC)."""
    values = raw.to_pandas()
    if raw.dtype.is_numeric() or (
        raw.dtype == pl.String and raw.str.contains(r"^\s*-?\d+(\.\d+)?\s*$").fill_null(False).all()
    ):
        nums = cast(pd.Series, pd.to_numeric(values, errors="coerce")).to_numpy(dtype=np.float64)
        bad = ~np.isfinite(nums)
        if bad.any():
            raise _bad_ts(path, raw, values, int(np.flatnonzero(bad)[0]))
        # the unit is read per row: a file mixing seconds and milliseconds must not put half
        # its bars in 1970
        unit = np.searchsorted([u[0] for u in _EPOCH_UNITS], np.abs(nums), side="right")
        if (unit != unit[0]).any():
            j = int(np.flatnonzero(unit != unit[0])[0])
            raise PriceFileError(
                f"{path}: mixed epoch units: row 1 {_show(values.iloc[0])} reads as "
                f"{_EPOCH_UNITS[unit[0]][2]}, row {j + 1} {_show(values.iloc[j])} as "
                f"{_EPOCH_UNITS[unit[j]][2]}"
            )
        us = np.round(nums * _EPOCH_UNITS[unit[0]][1])
        _check_years(path, us, values)
        return us.astype(np.int64)
    if raw.dtype == pl.String:
        parsed = pd.to_datetime(values.str.strip(), utc=True, format="ISO8601", errors="coerce")
    else:
        try:
            parsed = pd.to_datetime(values, utc=True, errors="coerce")
        except (TypeError, ValueError) as exc:
            raise PriceFileError(f"{path}: unparseable timestamp column: {exc}") from exc
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise _bad_ts(path, raw, values, int(np.flatnonzero(bad)[0]))
    us = parsed.dt.tz_convert(None).dt.as_unit("us").to_numpy().astype(np.int64)
    _check_years(path, us.astype(np.float64), values)
    return us


def _parse_number(path: Path, name: str, raw: pl.Series, ts_us: np.ndarray) -> np.ndarray:
    if raw.dtype == pl.String:
        cleaned = raw.str.strip_chars()
        nums = cleaned.cast(pl.Float64, strict=False)
        unparsed = nums.is_null() & cleaned.is_not_null() & (cleaned != "")
        if unparsed.any():
            i = int(np.flatnonzero(unparsed.to_numpy())[0])
            raise PriceFileError(f"{path}: row {i + 1} has unparseable {name} {raw[i]!r}")
    else:
        # Boolean/struct columns would cast to 1.0/0.0 or fail deep in polars: refuse by dtype
        if not (raw.dtype.is_numeric() or raw.dtype == pl.Null):
            raise PriceFileError(f"{path}: column {name!r} is not numeric ({raw.dtype})")
        try:
            nums = raw.cast(pl.Float64)
        except Exception as exc:
            raise PriceFileError(f"{path}: column {name!r} is not numeric ({raw.dtype})") from exc
    arr = nums.to_numpy().astype(np.float64)
    missing = ~np.isfinite(arr)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        kind = "NaN" if np.isnan(arr[i]) else "infinite"
        raise PriceFileError(f"{path}: row {i + 1} has {kind} {name}")
    negative = arr <= 0 if name != "volume" else arr < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        when = np.datetime64(int(ts_us[i]), "us")
        kind = "negative volume" if name == "volume" else f"non-positive {name}"
        raise PriceFileError(f"{path}: {kind} {float(arr[i])!r} at {when}Z (row {i + 1})")
    return arr


def load_prices(path: str | Path) -> PriceData:
    """Read a CSV/Parquet OHLCV file, validate it, sort it, drop duplicate timestamps (keep last).

    Accepted timestamps: ISO strings with or without an offset (naive = UTC) or epoch
    seconds/milli/micro/nanoseconds (one unit per file). CSVs may be ',', ';' or tab
    delimited. Volume is optional (missing -> 0.0).
    """
    path = Path(path)
    raw = _read_raw(path)
    mapping = _map_columns(path, raw.columns)
    if raw.height == 0:
        raise PriceFileError(f"{path}: empty file (header only, no rows)")
    ts_us = _parse_ts(path, raw[mapping["ts"]])
    data: dict[str, np.ndarray] = {}
    for name in (*PRICE_COLUMNS, "volume"):
        if name in mapping:
            data[name] = _parse_number(path, name, raw[mapping[name]], ts_us)
        else:
            data[name] = np.zeros(raw.height, dtype=np.float64)

    was_unsorted = bool(np.any(np.diff(ts_us) < 0))
    order = np.argsort(ts_us, kind="stable")  # stable: file order survives among equal ts
    ts_sorted = ts_us[order]
    # keep the LAST row of each run of equal timestamps (the later line in the file wins)
    keep = np.ones(ts_sorted.shape[0], dtype=bool)
    keep[:-1] = ts_sorted[1:] != ts_sorted[:-1]
    idx = order[keep]
    frame = pl.DataFrame(
        {
            "ts": pl.Series("ts", ts_us[idx], dtype=pl.Int64)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
            **{name: pl.Series(name, data[name][idx], dtype=pl.Float64) for name in data},
        }
    )
    return PriceData(frame=frame, report=_report(path, frame, ts_us[idx], was_unsorted, keep))


def _report(
    path: Path, frame: pl.DataFrame, ts_us: np.ndarray, was_unsorted: bool, keep: np.ndarray
) -> dict[str, Any]:
    diffs_s = np.diff(ts_us) / 1e6
    if diffs_s.size:
        interval = float(np.median(diffs_s))
        gaps = diffs_s[diffs_s > GAP_FACTOR * interval]
    else:
        interval, gaps = None, diffs_s
    return {
        "rows": frame.height,
        "duplicates_dropped": int((~keep).sum()),
        "was_unsorted": was_unsorted,
        "gap_count": int(gaps.size),
        "largest_gap_s": float(gaps.max()) if gaps.size else 0.0,
        "bar_interval_s": interval,
        "first_ts": frame["ts"][0].isoformat(),
        "last_ts": frame["ts"][-1].isoformat(),
        "source": str(path),
    }


def _norm(name: str) -> str:
    return name.upper().replace("-", "_").replace("/", "_")


def find_price_file(symbol: str, directory: str | Path) -> Path:
    """The price file for ``symbol`` in ``directory``: BTC-USD matches BTC-USD.csv, BTC_USD.csv,
    BTC_USD_hourly.csv and the .parquet variants. Hourly files win, then an exact name, then
    CSV over Parquet; two files that still tie (BTC-USD.csv and BTC_USD.csv) are refused.
    """
    directory = Path(directory)
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol.strip()):
        raise PriceFileError(f"invalid symbol {symbol!r}: use letters, digits, '-', '_' or '.'")
    if not directory.is_dir():
        raise PriceFileError(f"{directory}: price directory not found")
    want = _norm(symbol.strip())
    files = sorted(p for p in directory.iterdir() if p.is_file())
    ranked: list[tuple[int, int, str, Path]] = []
    for p in files:
        if p.suffix.lower() not in SUPPORTED_EXTENSIONS:
            continue
        stem = _norm(p.stem)
        if stem == want:
            rank = 1
        elif stem.startswith(want + "_"):
            suffix = stem[len(want) + 1 :]
            rank = 0 if suffix in ("HOURLY", "1H", "H1", "60M") else 2
        else:
            continue
        ranked.append((rank, 0 if p.suffix.lower() == ".csv" else 1, p.name, p))
    if not ranked:
        listing = ", ".join(p.name for p in files) or "(no files)"
        raise PriceFileError(f"no price file for {symbol!r} in {directory}; found: {listing}")
    best = min(ranked)
    tied = [r[2] for r in sorted(ranked) if r[:2] == best[:2]]
    if len(tied) > 1:
        # e.g. BTC-USD.csv and BTC_USD.csv, or BTC_USD_daily.csv and BTC_USD_4h.csv: picking
        # the first name alphabetically would backtest whichever happens to sort first
        raise PriceFileError(
            f"{len(tied)} price files in {directory} match {symbol!r} equally: "
            f"{', '.join(tied)}; keep one (an _hourly file or the exact symbol name wins)"
        )
    return best[3]
