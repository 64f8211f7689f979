"""vectorbt oracle: the numbers users trust, computed the slow, end-to-end vectorbt way.

The fast kernels are tested against this module. vectorbt 1.2 has a global
``vbt.settings['engine']`` ('auto' | 'numba' | 'rust'); with ``vectorbt-rust`` installed,
'auto' would switch engines underneath us, so every call pins 'numba' and restores the
previous value afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from qpipe_dagster.backtest.validation import validate_direction, validate_inputs


@contextmanager
def numba_engine() -> Iterator[None]:
    """Pin vectorbt to its numba engine for the duration of the block."""
    import vectorbt as vbt

    has_engine = "engine" in vbt.settings
    previous = vbt.settings["engine"] if has_engine else None
    if has_engine:
        vbt.settings["engine"] = "numba"
    try:
        yield
    finally:
        if has_engine:
            vbt.settings["engine"] = previous


def freq_for(periods_per_year: float) -> pd.Timedelta:
    """Bar length such that vectorbt's ``365 days / freq`` equals ``periods_per_year``."""
    return pd.Timedelta(days=365) / periods_per_year


def vectorbt_ma_crossover(
    close: np.ndarray,
    fast: np.ndarray | int,
    slow: np.ndarray | int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
) -> dict[str, np.ndarray]:
    """MA-crossover metrics via ``vbt.MA.run`` + ``Portfolio.from_signals`` (same keys as the kernel).

    ``max_drawdown`` keeps vectorbt's sign (a non-positive fraction); ``win_rate`` is over
    closed trades; ``trade_count`` counts the open trade at the end too.
    """
    import vectorbt as vbt

    direction = validate_direction(direction)
    close, fast, slow = validate_inputs(close, fast, slow)
    series = pd.Series(close)
    with numba_engine():
        fast_ma = vbt.MA.run(series, window=list(fast.tolist()), short_name="fast")
        slow_ma = vbt.MA.run(series, window=list(slow.tolist()), short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma)
        exits = fast_ma.ma_crossed_below(slow_ma)
        pf = vbt.Portfolio.from_signals(
            series,
            entries,
            exits,
            fees=fees,
            slippage=slippage,
            init_cash=init_cash,
            freq=freq_for(periods_per_year),
            direction=direction,
        )
        out = {
            "total_return": pf.total_return(),
            "sharpe": pf.sharpe_ratio(),
            "sortino": pf.sortino_ratio(),
            "max_drawdown": pf.max_drawdown(),
            "win_rate": pf.trades.closed.win_rate(),
            "trade_count": pf.trades.count(),
            "exposure": pf.position_coverage(),
        }
    return {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in out.items()}


def vectorbt_ma_equity(
    close: np.ndarray,
    fast: int,
    slow: int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float = 8760.0,
    direction: str = "longonly",
) -> np.ndarray:
    """``pf.value()`` of one parameter set, for equity-curve comparisons."""
    import vectorbt as vbt

    direction = validate_direction(direction)
    close, f, s = validate_inputs(close, fast, slow)
    series = pd.Series(close)
    with numba_engine():
        fast_ma = vbt.MA.run(series, window=int(f[0]))
        slow_ma = vbt.MA.run(series, window=int(s[0]))
        pf = vbt.Portfolio.from_signals(
            series,
            fast_ma.ma_crossed_above(slow_ma),
            fast_ma.ma_crossed_below(slow_ma),
            fees=fees,
            slippage=slippage,
            init_cash=init_cash,
            freq=freq_for(periods_per_year),
            direction=direction,
        )
        return np.asarray(pf.value(), dtype=np.float64).reshape(-1)
