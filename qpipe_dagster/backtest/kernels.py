"""Fused Numba kernel for moving-average crossover sweeps.

One pass over the bars per (fast, slow) pair computes the SMAs, the crossover signals, the
long-only all-in position and the metrics, so no per-combination array is ever materialised.

Every arithmetic step mirrors the vectorbt 1.2 numba engine so the numbers agree to ~1e-12:
* SMAs come from the same running cumulative sum `rolling_mean_1d_nb` uses
  (``(cs[i] - cs[i - w]) / w``), so a crossover flips at the same bar (float32 or a
  different summation order would flip near-ties).
* Crossovers use the `crossed_above_1d_nb` state machine (a tie does not re-arm
  ``was_below``, a NaN resets it).
* Orders follow `buy_nb` / `sell_nb` with ``size=inf`` (spend all cash; fees come out of
  the cash: ``size = cash / (1 + fees) / price``) and vectorbt's ``add_nb`` snapping to zero.
* Metrics follow vectorbt's `returns` accessor: returns from the value series with
  ``init_cash`` as the value before bar 0, Sharpe with ``ddof=1``, Sortino with the
  downside deviation over all bars, max drawdown from the cumulative product of returns.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "trade_count",
    "exposure",
)

_REL_TOL = 1e-9  # vectorbt.utils.math_.rel_tol
_ABS_TOL = 1e-12  # vectorbt.utils.math_.abs_tol
_MIN_SIZE = 1e-8  # vectorbt portfolio default min_size: smaller orders are rejected


@njit(cache=True, inline="always")
def _is_close(a: float, b: float) -> bool:
    if a == b:
        return True
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), _ABS_TOL)


@njit(cache=True, inline="always")
def _add(a: float, b: float) -> float:
    """vectorbt's ``add_nb``: a sum that is approximately zero becomes exactly zero."""
    if np.sign(a) != np.sign(b):
        if _is_close(abs(a), abs(b)):
            return 0.0
    elif _is_close(a + b, 0.0):
        return 0.0
    return a + b


@njit(cache=True, inline="always")
def _sma(cumsum: np.ndarray, i: int, window: int) -> float:
    """SMA at bar ``i`` exactly as vectorbt's running-sum ``rolling_mean_1d_nb`` computes it."""
    if i < window:
        return cumsum[i] / window
    return (cumsum[i] - cumsum[i - window]) / window


@njit(cache=True)
def running_sum(close: np.ndarray) -> np.ndarray:
    """Sequential cumulative sum (vectorbt's SMA accumulates left to right, never pairwise)."""
    out = np.empty(close.shape[0], dtype=np.float64)
    total = 0.0
    for i in range(close.shape[0]):
        total = total + close[i]
        out[i] = total
    return out


@njit(cache=True)
def simulate_ma_crossover(
    close: np.ndarray,
    cumsum: np.ndarray,
    fast: int,
    slow: int,
    fees: float,
    slippage: float,
    init_cash: float,
    ann_factor: float,
    equity: np.ndarray,
    write_equity: bool,
) -> tuple[float, float, float, float, float, float, float]:
    """Simulate one (fast, slow) pair; returns the metrics in `METRIC_KEYS` order.

    When ``write_equity`` is true the portfolio value at every bar is written to ``equity``.
    """
    n = close.shape[0]
    cash = init_cash  # cash balance as vectorbt's cash_nb tracks it
    position = 0.0
    profit_cash = 0.0  # vectorbt total_profit_nb's order-by-order cash ledger (starts at 0)
    n_orders = 0
    prev_value = init_cash
    # running sums for mean / variance / downside (returns of flat bars are exactly 0)
    sum_r = 0.0
    sum_r2 = 0.0
    sum_down2 = 0.0
    cumprod = 1.0
    peak = 100.0
    max_dd = 0.0
    in_market_bars = 0
    trades = 0
    closed = 0
    wins = 0
    entry_size = 0.0
    entry_price = 0.0
    entry_fees = 0.0
    # crossover state machines (crossed_above_1d_nb with wait=0)
    up_was_below = False
    up_ago = -1
    dn_was_below = False
    dn_ago = -1
    first = slow - 1 if slow > fast else fast - 1
    if write_equity:
        for i in range(min(first, n)):
            equity[i] = init_cash
    for i in range(first, n):
        fm = _sma(cumsum, i, fast)
        sm = _sma(cumsum, i, slow)
        entry = False
        if fm > sm:
            if up_was_below:
                up_ago += 1
                entry = up_ago == 0
        elif fm == sm:
            up_ago = -1
        else:
            up_ago = -1
            up_was_below = True
        exit_ = False
        if sm > fm:
            if dn_was_below:
                dn_ago += 1
                exit_ = dn_ago == 0
        elif sm == fm:
            dn_ago = -1
        else:
            dn_ago = -1
            dn_was_below = True

        traded = False
        price = close[i]
        if position == 0.0:
            if entry and cash > 0.0:
                adj_price = price * (1.0 + slippage)
                max_req_cash = cash / (1.0 + fees)
                size = max_req_cash / adj_price
                if size >= _MIN_SIZE or _is_close(size, _MIN_SIZE):
                    fees_paid = cash - max_req_cash
                    flow = -size * adj_price - fees_paid
                    cash = _add(cash, _add(0.0, flow))
                    position = _add(0.0, size)
                    profit_cash = _add(profit_cash, -(size * adj_price + fees_paid))
                    n_orders += 1
                    trades += 1
                    entry_size = size
                    entry_price = adj_price
                    entry_fees = fees_paid
                    traded = True
        elif exit_:
            adj_price = price * (1.0 - slippage)
            size = position
            if size >= _MIN_SIZE or _is_close(size, _MIN_SIZE):
                acq_cash = size * adj_price
                fees_paid = acq_cash * fees
                if acq_cash - fees_paid >= 0.0:
                    flow = size * adj_price - fees_paid
                    cash = _add(cash, _add(0.0, flow))
                    position = _add(position, -size)
                    profit_cash = _add(profit_cash, size * adj_price - fees_paid)
                    n_orders += 1
                    closed += 1
                    val_diff = _add(entry_size * adj_price, -(entry_size * entry_price))
                    pnl = val_diff - entry_fees - fees_paid
                    if pnl > 0.0:
                        wins += 1
                    traded = True

        if position != 0.0:
            in_market_bars += 1
        if position != 0.0 or traded:
            value = cash + position * price
            if prev_value == 0.0:
                r = 0.0 if value == 0.0 else np.inf * np.sign(value)
            else:
                r = (value - prev_value) / prev_value
                if prev_value < 0.0:
                    r = -r
            prev_value = value
            sum_r += r
            sum_r2 += r * r
            if r < 0.0:
                sum_down2 += r * r
            cumprod *= r + 1.0
            cum = cumprod * 100.0
            if cum > peak:
                peak = cum
            dd = cum / peak - 1.0
            if dd < max_dd:
                max_dd = dd
            if write_equity:
                equity[i] = value
        elif write_equity:
            equity[i] = cash

    # vectorbt total_profit_nb: order-by-order cash ledger + open position at the last close
    total_return = 0.0 if n_orders == 0 else (profit_cash + position * close[n - 1]) / init_cash

    if n < 2:
        sharpe = np.nan
        sortino = np.nan
    else:
        mean = sum_r / n
        ssd = sum_r2 - sum_r * mean
        if ssd < 0.0:
            ssd = 0.0
        std = math.sqrt(ssd / n * n / (n - 1))
        sharpe = np.inf if std == 0.0 else mean / std * math.sqrt(ann_factor)
        downside = math.sqrt(sum_down2 / n) * math.sqrt(ann_factor)
        sortino = np.inf if downside == 0.0 else mean * ann_factor / downside
    win_rate = wins / closed if closed > 0 else np.nan
    exposure = in_market_bars / n
    return (
        total_return,
        sharpe,
        sortino,
        max_dd,
        win_rate,
        float(trades),
        exposure,
    )


@njit(parallel=True, cache=True, fastmath=False)
def ma_crossover_sweep_kernel(
    close: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    fees: float,
    slippage: float,
    init_cash: float,
    ann_factor: float,
) -> np.ndarray:
    """Metrics for every (fast[k], slow[k]) pair; shape (len(METRIC_KEYS), len(fast))."""
    cumsum = running_sum(close)
    m = fast.shape[0]
    out = np.empty((7, m), dtype=np.float64)
    dummy = np.empty(0, dtype=np.float64)
    for k in prange(m):
        res = simulate_ma_crossover(
            close, cumsum, fast[k], slow[k], fees, slippage, init_cash, ann_factor, dummy, False
        )
        for j in range(7):
            out[j, k] = res[j]
    return out


@njit(cache=True)
def ma_crossover_equity_kernel(
    close: np.ndarray,
    fast: int,
    slow: int,
    fees: float,
    slippage: float,
    init_cash: float,
) -> np.ndarray:
    """Portfolio value at every bar for one (fast, slow) pair (vectorbt ``pf.value()``)."""
    cumsum = running_sum(close)
    equity = np.empty(close.shape[0], dtype=np.float64)
    simulate_ma_crossover(close, cumsum, fast, slow, fees, slippage, init_cash, 1.0, equity, True)
    return equity


def ma_crossover_sweep(
    close: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
) -> dict[str, np.ndarray]:
    """Metrics of every (fast[k], slow[k]) SMA-crossover pair, matching vectorbt's from_signals.

    Keys are `METRIC_KEYS`. ``max_drawdown`` uses vectorbt's sign: a non-positive fraction
    (-0.25 = a 25 % fall from the peak). ``win_rate`` is over closed trades (NaN without
    one); ``trade_count`` includes a trade still open at the last bar. Sharpe/Sortino are
    +inf when the return series has zero spread (e.g. a pair that never trades), as in
    vectorbt.
    """
    from qpipe_dagster.backtest.validation import (
        validate_costs,
        validate_direction,
        validate_inputs,
    )

    validate_direction(direction)
    validate_costs(fees, slippage, init_cash, periods_per_year)
    arr, f, s = validate_inputs(close, fast, slow)
    out = ma_crossover_sweep_kernel(
        arr, f, s, float(fees), float(slippage), float(init_cash), float(periods_per_year)
    )
    metrics = {key: out[j] for j, key in enumerate(METRIC_KEYS)}
    metrics["trade_count"] = metrics["trade_count"].astype(np.int64)
    return metrics


def ma_crossover_equity(
    close: np.ndarray,
    fast: int,
    slow: int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float | None = None,
    direction: str = "longonly",
) -> np.ndarray:
    """Portfolio value at every bar for one parameter set (vectorbt's ``pf.value()``).

    ``periods_per_year`` is accepted for symmetry with the sweep and unused.
    """
    from qpipe_dagster.backtest.validation import (
        validate_costs,
        validate_direction,
        validate_inputs,
    )

    validate_direction(direction)
    validate_costs(fees, slippage, init_cash, periods_per_year)
    arr, f, s = validate_inputs(close, fast, slow)
    if f.shape[0] != 1:
        raise ValueError(f"ma_crossover_equity takes one (fast, slow) pair, got {f.shape[0]}")
    return ma_crossover_equity_kernel(
        arr, int(f[0]), int(s[0]), float(fees), float(slippage), float(init_cash)
    )
