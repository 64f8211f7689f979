"""Load OHLCV price files (CSV or Parquet) into one strict, sorted, de-duplicated shape.

Columns are mapped by name, case-insensitively, because real exports disagree on order
(`BTC_USD_daily.csv` is ``Date,Close,High,Low,Open,Volume``; the hourly files are
``datetime,open,high,low,close,volume``). Every problem raises `PriceFileError` naming the
file and what is wrong, so a bad download never turns into a silent bad backtest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".csv", ".parquet", ".pq")
TS_NAMES: tuple[str, ...] = ("ts", "datetime", "timestamp", "date", "time")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
CLOSE_FALLBACKS: tuple[str, ...] = ("adj close", "adj_close", "adjclose")
GAP_FACTOR = 1.5  # an interval longer than 1.5x the median bar interval is a gap
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


def _read_raw(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise PriceFileError(
            f"{path}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise PriceFileError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise PriceFileError(f"{path}: empty file")
    try:
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=0)  # all strings: we parse ourselves
        return pl.read_parquet(path)
    except pl.exceptions.NoDataError as exc:
        raise PriceFileError(f"{path}: empty file") from exc
    except Exception as exc:  # polars/arrow raise many types for corrupt files
        raise PriceFileError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc


def _map_columns(path: Path, columns: list[str]) -> dict[str, str]:
    """Canonical name -> source column, matched case-insensitively after trimming."""
    by_lower: dict[str, str] = {}
    for col in columns:
        by_lower.setdefault(col.strip().lower(), col)
    mapping: dict[str, str] = {}
    ts = next((by_lower[n] for n in TS_NAMES if n in by_lower), None)
    if ts is None:
        raise PriceFileError(
            f"{path}: missing column 'ts' (any of {', '.join(TS_NAMES)}); found {columns}"
        )
    mapping["ts"] = ts
    for name in PRICE_COLUMNS:
        src = by_lower.get(name)
        if src is None and name == "close":
            src = next((by_lower[n] for n in CLOSE_FALLBACKS if n in by_lower), None)
        if src is None:
            raise PriceFileError(f"{path}: missing column {name!r}; found {columns}")
        mapping[name] = src
    if "volume" in by_lower:
        mapping["volume"] = by_lower["volume"]
    return mapping


def _parse_ts(path: Path, raw: pl.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch, UTC (naive strings are UTC)."""
    values = raw.to_pandas()
    if raw.dtype.is_numeric() or (
        raw.dtype == pl.String and raw.str.contains(r"^\s*-?\d+(\.\d+)?\s*$").fill_null(False).all()
    ):
        nums = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(nums)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PriceFileError(f"{path}: row {i + 1}: unparseable timestamp {values.iloc[i]!r}")
        magnitude = np.nanmax(np.abs(nums)) if nums.size else 0.0
        # epoch seconds until year ~5000, then milliseconds, microseconds, nanoseconds
        scale = 1e6 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1.0
        if magnitude >= 1e17:
            scale = 1e-3
        us = np.round(nums * scale)
        # outside years 1..9999 the int64 cast overflows or datetimes cannot be built later
        out = (us < _MIN_US) | (us > _MAX_US)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise PriceFileError(
                f"{path}: row {i + 1}: timestamp {values.iloc[i]!r} is outside years 1..9999"
            )
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
        i = int(np.flatnonzero(bad)[0])
        raise PriceFileError(f"{path}: row {i + 1}: unparseable timestamp {values.iloc[i]!r}")
    return parsed.dt.tz_convert(None).dt.as_unit("us").to_numpy().astype(np.int64)


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
    seconds/milliseconds. Volume is optional (missing -> 0.0).
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
    BTC_USD_hourly.csv and the .parquet variants. Hourly files win, then an exact name.
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
    return min(ranked)[3]
