"""Sweep every configured family with an in-sample / out-of-sample split, into one Arrow table.

The best set is chosen on in-sample Sharpe only and then reported out of sample, so the gap
between ``best_is_sharpe`` and ``best_oos_sharpe`` shows how much of the in-sample result was
overfitting. Pure logic (no Dagster): `defs/validation.py` turns a `SweepReport` into
metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from qpipe_dagster.backtest.engine import GridRun, run_sweep
from qpipe_dagster.backtest.kernels import METRIC_KEYS
from qpipe_dagster.backtest.strategies import (
    FAMILY_PARAMS,
    HEATMAP_AXES,
    StrategyGrid,
    equity_curve,
    split_bounds,
)
from qpipe_dagster.backtest.validation import check_grid_size

ALL_PARAMS: tuple[str, ...] = ("fast", "slow", "window", "width", "low", "high")
PREFIXES: tuple[str, ...] = ("", "is_", "oos_")


@dataclass
class SweepReport:
    """The results table plus what the UI shows about the best set."""

    table: pa.Table
    runs: list[GridRun]
    split_bar: int | None
    best: dict[str, str | float] = field(default_factory=dict)
    equity: np.ndarray | None = None
    heatmaps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str, str]] = field(
        default_factory=dict
    )


def split_index(ts: np.ndarray, fraction: float | None, date: str | None) -> int | None:
    """Bar index where out-of-sample starts: from an ISO date (first bar at/after it) or a
    fraction of the bars; None when neither is set."""
    if date:
        try:
            when = np.datetime64(date.replace("Z", ""), "us")
        except ValueError as exc:
            raise ValueError(f"split_date {date!r} is not an ISO date/time: {exc}") from exc
        if np.isnat(when):  # 'NaT' parses, then read as 'outside the price range'
            raise ValueError(f"split_date {date!r} is not an ISO date/time")
        t = np.asarray(ts).astype("datetime64[us]")
        if (np.diff(t) < np.timedelta64(0, "us")).any():  # searchsorted needs sorted bars
            raise ValueError(f"split_date {date!r} needs timestamps sorted ascending")
        idx = int(np.searchsorted(t, when, side="left"))
        if idx <= 0 or idx >= t.shape[0]:
            raise ValueError(
                f"split_date {date} is outside the price range {t[0]} .. {t[-1]}: "
                "no in-sample or no out-of-sample bars"
            )
        return idx
    if fraction is None:
        return None
    if not math.isfinite(fraction) or not 0 < fraction < 1:  # NaN would fail in int()
        raise ValueError(f"split_fraction must be in (0, 1), got {fraction!r}")
    return round(len(ts) * fraction)


def _table(runs: list[GridRun], direction: str) -> pa.Table:
    cols: dict[str, list[pa.Array]] = {}

    def put(name: str, arr: pa.Array) -> None:
        cols.setdefault(name, []).append(arr)

    for run in runs:
        g, m = run.grid, run.grid.size
        put("strategy", pa.array([g.family] * m))
        put("label", pa.array([g.describe(k) for k in range(m)]))
        put("direction", pa.array([direction] * m))
        for name in ALL_PARAMS:
            if name in g.params:
                typ = pa.int32() if name in ("fast", "slow", "window") else pa.float64()
                put(name, pa.array(g.params[name], typ))
            else:
                typ = pa.int32() if name in ("fast", "slow", "window") else pa.float64()
                put(name, pa.nulls(m, typ))
        seg_names = ("",) if len(run.segments) == 1 else PREFIXES
        for prefix, seg in zip(seg_names, run.segments, strict=True):
            for key in METRIC_KEYS:
                if key == "trade_count":
                    put(prefix + key, pa.array(np.asarray(seg[key], dtype=np.int64)))
                else:
                    put(prefix + key, pa.array(np.asarray(seg[key], dtype=np.float64)))
        put("backend", pa.array([run.backend] * m))
        put("device", pa.array([run.device] * m))
        put("compute_seconds", pa.array([run.seconds] * m))
    return pa.table({k: pa.concat_arrays(v) for k, v in cols.items()})


def sweep_families(
    close: np.ndarray,
    ts: np.ndarray,
    grids: list[StrategyGrid],
    *,
    split_fraction: float | None = 0.7,
    split_date: str | None = None,
    backend: str = "auto",
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
) -> SweepReport:
    """Whole-series, in-sample and out-of-sample metrics for every set of every grid.

    Everything is validated (prices, grids, costs, split) before the first sweep runs.
    """
    if not grids:
        raise ValueError("no strategy family selected: nothing to backtest")
    # each family's grid is capped when built; the table holds all of them at once
    sizes = ", ".join(f"{g.family} {g.size:,}" for g in grids)
    check_grid_size(f"the sweep ({sizes})", sum(g.size for g in grids))
    close = np.asarray(close)
    if np.asarray(ts).shape[0] != close.shape[0]:
        raise ValueError(f"ts and close lengths differ: {len(ts)} vs {close.shape[0]}")
    n = close.shape[0]
    for g in grids:
        g.check_bars(n)
    largest = max(g.largest_window for g in grids)
    s = split_index(ts, split_fraction, split_date)
    if s is not None and not 0 < s < n:
        raise ValueError(f"split at bar {s} is outside 1..{n - 1}")
    bounds = split_bounds(n, s, largest) if s is not None else None
    kw = {
        "fees": fees,
        "slippage": slippage,
        "init_cash": init_cash,
        "periods_per_year": periods_per_year,
        "direction": direction,
    }
    runs: list[GridRun] = []
    for g in grids:
        whole = run_sweep(close, g, backend=backend, **kw)
        if bounds is not None:
            parts = run_sweep(close, g, backend=backend, bounds=bounds, **kw)
            whole = GridRun(
                g,
                [whole.segments[0], *parts.segments],
                bounds,
                whole.backend,
                whole.device,
                whole.fallback_reason,
                whole.seconds + parts.seconds,
            )
        runs.append(whole)
    report = SweepReport(_table(runs, direction), runs, s)
    _pick_best(report, close, bounds, kw)
    for run in runs:
        xname, yname = HEATMAP_AXES[run.grid.family]
        seg = run.segments[1] if len(run.segments) > 1 else run.segments[0]
        report.heatmaps[run.grid.family] = (
            run.grid.params[xname],
            run.grid.params[yname],
            np.asarray(seg["sharpe"]),
            xname,
            yname,
        )
    return report


def _pick_best(report: SweepReport, close: np.ndarray, bounds: np.ndarray | None, kw: dict) -> None:
    """Best set by in-sample Sharpe among sets that traded in sample (finite Sharpe)."""
    split = bounds is not None
    pick_seg = 1 if split else 0
    best_val, best_run, best_k = -np.inf, None, -1
    for run in report.runs:
        seg = run.segments[pick_seg]
        sharpe = np.asarray(seg["sharpe"], dtype=np.float64)
        ok = np.isfinite(sharpe) & (np.asarray(seg["trade_count"]) > 0)
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmax(sharpe[ok])])
            if sharpe[k] > best_val:
                best_val, best_run, best_k = float(sharpe[k]), run, k
    if best_run is None:  # nothing traded in sample: take the first set, say so
        best_run, best_k = report.runs[0], 0
    g = best_run.grid
    best: dict[str, str | float] = {
        "best_strategy": g.describe(best_k),
        "best_family": g.family,
        **{f"best_{p}": float(g.params[p][best_k]) for p in FAMILY_PARAMS[g.family]},
    }
    names = (("", 0), ("is_", 1), ("oos_", 2)) if split else (("", 0),)
    sharpes: dict[str, float] = {}
    for prefix, idx in names:
        for key in ("sharpe", "total_return", "max_drawdown", "trade_count"):
            best[f"best_{prefix}{key}"] = value = float(best_run.segments[idx][key][best_k])
            if key == "sharpe":
                sharpes[prefix] = value
    if split:
        best["best_is_oos_sharpe_gap"] = sharpes["is_"] - sharpes["oos_"]
    report.best = best
    report.equity = equity_curve(
        close, g, best_k, **{k: v for k, v in kw.items() if k != "periods_per_year"}
    )
