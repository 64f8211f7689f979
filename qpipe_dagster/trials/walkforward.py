"""Walk-forward evaluation: choose on a rolling in-sample window, trade the next window.

Fold i uses bars [a_i, a_i + is_bars) in sample and [a_i + is_bars, a_i + is_bars + oos_bars)
out of sample, with a_i = start + i * oos_bars, so the out-of-sample windows tile the end of
the series without overlap. In each fold the set with the best plateau in-sample Sharpe
(`stability.neighbour_stats`) is chosen and traded out of sample from fresh cash; the
out-of-sample equity curves are chained into one stitched curve. Indicators are computed on
the whole history (as in the sweep's segments), so no window restarts its warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qpipe_dagster.backtest.engine import run_sweep
from qpipe_dagster.backtest.strategies import StrategyGrid, equity_curve
from qpipe_dagster.trials.stability import neighbour_stats


@dataclass
class WalkForward:
    folds: list[dict]
    equity: np.ndarray  # stitched out-of-sample equity, one value per OOS bar
    start_bar: int
    sharpe: float
    total_return: float


def walk_forward(
    close: np.ndarray,
    grids: list[StrategyGrid],
    *,
    n_folds: int,
    periods_per_year: float,
    is_fraction: float = 0.7,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    direction: str = "longonly",
    backend: str = "auto",
) -> WalkForward:
    """``n_folds`` rolling folds over the bars after the longest warm-up window; each fold's
    window is in-sample for ``is_fraction`` of its length (e.g. 0.7: 70 % IS, 30 % OOS)."""
    if not isinstance(n_folds, int) or n_folds < 1:
        raise ValueError(f"walk_forward_folds must be a whole number >= 1, got {n_folds!r}")
    if not 0 < is_fraction < 1:
        raise ValueError(f"is_fraction must be in (0, 1), got {is_fraction!r}")
    close = np.asarray(close, dtype=np.float64)
    n = close.shape[0]
    warm = max(g.largest_window for g in grids)
    usable = n - warm
    # window = is + oos; n_folds windows sliding by oos cover is + n_folds * oos bars
    oos = int(usable * (1 - is_fraction) / (is_fraction + n_folds * (1 - is_fraction)))
    is_bars = int(oos * is_fraction / (1 - is_fraction))
    if oos < 2 or is_bars < 2:
        raise ValueError(
            f"walk_forward_folds {n_folds}: {usable} bars after the {warm}-bar warm-up are too "
            "few; use fewer folds"
        )
    start = n - is_bars - n_folds * oos
    kw = {"fees": fees, "slippage": slippage, "init_cash": init_cash, "direction": direction}
    folds, pieces = [], []
    for i in range(n_folds):
        a = start + i * oos
        bounds = np.array([a, a + is_bars, a + is_bars + oos], dtype=np.int64)
        best = (-math.inf, None, -1, math.nan)
        for g in grids:
            run = run_sweep(close, g, backend=backend, bounds=bounds,
                            periods_per_year=periods_per_year, **kw)  # fmt: skip
            sharpe = np.where(
                np.asarray(run.segments[0]["trade_count"]) > 0,
                np.asarray(run.segments[0]["sharpe"], dtype=np.float64),
                np.nan,
            )
            sharpe[~np.isfinite(sharpe)] = np.nan
            plateau, _, _ = neighbour_stats(g.params, sharpe)
            if np.isfinite(plateau).any():
                k = int(np.nanargmax(plateau))
                if plateau[k] > best[0]:
                    best = (float(plateau[k]), g, k, float(run.segments[1]["sharpe"][k]))
        score, g, k, oos_sharpe = best
        if g is None:
            g, k = grids[0], 0
        eq = equity_curve(close, g, k, bounds=bounds[1:], **kw)[bounds[1] : bounds[2]]
        pieces.append(eq / init_cash)
        folds.append(
            {
                "fold": i,
                "is_bars": [int(bounds[0]), int(bounds[1])],
                "oos_bars": [int(bounds[1]), int(bounds[2])],
                "chosen": g.describe(k),
                "is_plateau_sharpe": score,
                "oos_sharpe": oos_sharpe,
                "oos_return": float(eq[-1] / init_cash - 1.0),
            }
        )
    growth, level = [], 1.0
    for p in pieces:
        growth.append(level * p)
        level = float(level * p[-1])
    equity = np.concatenate(growth) * init_cash
    rets = np.diff(np.concatenate([[init_cash], equity])) / np.concatenate(
        [[init_cash], equity[:-1]]
    )
    sd = rets.std(ddof=1)
    sharpe = float(rets.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0
    return WalkForward(
        folds, equity, int(start + is_bars), sharpe, float(equity[-1] / init_cash - 1)
    )
