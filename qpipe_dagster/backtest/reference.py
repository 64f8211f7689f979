"""vectorbt oracle: the numbers users trust, computed the slow, end-to-end vectorbt way.

The fast kernels are tested against this module. vectorbt 1.2 has a global
``vbt.settings['engine']`` ('auto' | 'numba' | 'rust'); with ``vectorbt-rust`` installed,
'auto' would switch engines underneath us, so every call pins 'numba' and restores the
previous value afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from qpipe_dagster.backtest.strategies import StrategyGrid
from qpipe_dagster.backtest.validation import validate_close, validate_direction, validate_inputs

# vectorbt builds each indicator's outputs and signal methods (ma_crossed_above, lower, rsi, ...)
# when its class is made, so no static type names them.
Indicator = Any


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
    freq = pd.Timedelta(days=365) / periods_per_year
    if not isinstance(freq, pd.Timedelta):  # NaT from a NaN rate
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return freq


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
        fast_ma: Indicator = vbt.MA.run(series, window=list(fast.tolist()), short_name="fast")
        slow_ma: Indicator = vbt.MA.run(series, window=list(slow.tolist()), short_name="slow")
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
            direction=VBT_DIRECTION[direction],
        )
        return _metrics(pf)


VBT_DIRECTION = {"longonly": "longonly", "longshort": "both"}


def _metrics(pf) -> dict[str, np.ndarray]:  # a vectorbt Portfolio
    """The metrics the kernels report, as flat float64 arrays (one value per column)."""
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


def vectorbt_signals(close: np.ndarray, grid: StrategyGrid) -> tuple[np.ndarray, np.ndarray]:
    """(entries, exits) boolean arrays of shape (bars, sets) from vectorbt's own indicators."""
    import vectorbt as vbt

    series = pd.Series(close)
    p = grid.params
    with numba_engine():
        if grid.family == "ma_crossover":
            fast_ma: Indicator = vbt.MA.run(series, window=p["fast"].tolist(), short_name="fast")
            slow_ma: Indicator = vbt.MA.run(series, window=p["slow"].tolist(), short_name="slow")
            entries = fast_ma.ma_crossed_above(slow_ma).to_numpy()
            exits = fast_ma.ma_crossed_below(slow_ma).to_numpy()
        elif grid.family == "bollinger":
            bb: Indicator = vbt.BBANDS.run(
                series, window=p["window"].tolist(), alpha=p["width"].tolist()
            )
            c = close[:, None]
            entries = c < bb.lower.to_numpy().reshape(close.shape[0], -1)
            exits = c > bb.upper.to_numpy().reshape(close.shape[0], -1)
        else:
            rsi_ind: Indicator = vbt.RSI.run(series, window=p["window"].tolist())
            rsi = rsi_ind.rsi.to_numpy()
            rsi = rsi.reshape(close.shape[0], -1)
            with np.errstate(invalid="ignore"):
                entries = rsi < p["low"][None, :]
                exits = rsi > p["high"][None, :]
    shape = (close.shape[0], grid.size)
    return entries.reshape(shape), exits.reshape(shape)


def vectorbt_sweep(
    close: np.ndarray,
    grid: StrategyGrid,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
    start: int = 0,
    end: int | None = None,
) -> dict[str, np.ndarray]:
    """Any family via vectorbt indicators + ``Portfolio.from_signals`` on bars [start, end).

    Signals come from the whole series and are then sliced, so an out-of-sample segment keeps
    its indicator history while its portfolio starts fresh from ``init_cash``.
    """
    import vectorbt as vbt

    direction = validate_direction(direction)
    close = validate_close(close)
    grid.check_bars(close.shape[0])
    entries, exits = vectorbt_signals(close, grid)
    sl = slice(start, close.shape[0] if end is None else end)
    with numba_engine():
        pf = vbt.Portfolio.from_signals(
            pd.Series(close[sl]),
            pd.DataFrame(entries[sl]),
            pd.DataFrame(exits[sl]),
            fees=fees,
            slippage=slippage,
            init_cash=init_cash,
            freq=freq_for(periods_per_year),
            direction=VBT_DIRECTION[direction],
        )
        return _metrics(pf)


def vectorbt_equity(
    close: np.ndarray,
    grid: StrategyGrid,
    k: int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    direction: str = "longonly",
) -> np.ndarray:
    """``pf.value()`` of parameter set ``k`` over the whole series."""
    import vectorbt as vbt

    close = validate_close(close)
    sub = grid.subset([k])
    entries, exits = vectorbt_signals(close, sub)
    with numba_engine():
        pf = vbt.Portfolio.from_signals(
            pd.Series(close),
            pd.Series(entries[:, 0]),
            pd.Series(exits[:, 0]),
            fees=fees,
            slippage=slippage,
            init_cash=init_cash,
            freq=freq_for(8760.0),
            direction=VBT_DIRECTION[validate_direction(direction)],
        )
        return np.asarray(pf.value(), dtype=np.float64).reshape(-1)


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
        fast_ma: Indicator = vbt.MA.run(series, window=int(f[0]))
        slow_ma: Indicator = vbt.MA.run(series, window=int(s[0]))
        pf = vbt.Portfolio.from_signals(
            series,
            fast_ma.ma_crossed_above(slow_ma),
            fast_ma.ma_crossed_below(slow_ma),
            fees=fees,
            slippage=slippage,
            init_cash=init_cash,
            freq=freq_for(periods_per_year),
            direction=VBT_DIRECTION[direction],
        )
        return np.asarray(pf.value(), dtype=np.float64).reshape(-1)
