"""Fused Numba kernel for strategy sweeps (MA crossover, Bollinger reversal, RSI threshold).

One pass over the bars per parameter set computes the indicator, the signals, the all-in
portfolio and the metrics, so no per-combination array is ever materialised. The portfolio
and metrics code is shared by every family; only the signal block differs.

Every arithmetic step mirrors the vectorbt 1.2 numba engine so the numbers agree to ~1e-12:
* SMAs use the running cumulative sum of `rolling_mean_1d_nb` (``(cs[i] - cs[i - w]) / w``);
  Bollinger's std is the Kahan-compensated Welford of `rolling_std_1d_nb` (ddof=0), RSI the
  SMA variant of ``vbt.RSI`` (``ewm=False``: rolling means of gains/losses, first value at
  bar ``window``). float32 or another summation order would flip near-ties.
* Crossovers use the `crossed_above_1d_nb` state machine; Bollinger enters on
  ``close < lower`` and exits on ``close > upper``; RSI enters on ``rsi < low`` and exits on
  ``rsi > high``.
* Orders follow `signals_to_size_nb` + `buy_nb` / `sell_nb` with ``size=inf``, the defaults
  ``accumulate=False``, ``upon_*_conflict='ignore'``, ``upon_opposite_entry='reversereduce'``
  and ``min_size=1e-8``. ``longshort`` is ``direction='both'``: entries open/reverse to long,
  exits open/reverse to short (all free cash, vectorbt's 100 % short rule).
* Metrics follow vectorbt: returns of ``pf.value()`` with ``init_cash`` before the first bar,
  Sharpe with ``ddof=1``, Sortino with the downside deviation over all bars, max drawdown
  from the cumulative product of returns, exit trades for win rate and trade count.

Segments: ``bounds = [b0, b1, ..., bk]`` runs k independent portfolios on bars [b0, b1),
[b1, b2), ... with signals computed on the whole history (as when vectorbt's signals are
computed on the full series and sliced), which is how in-sample / out-of-sample work.
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
N_METRICS = len(METRIC_KEYS)

FAMILY_CODES: dict[str, int] = {"ma_crossover": 0, "bollinger": 1, "rsi": 2}
DIRECTION_CODES: dict[str, int] = {"longonly": 0, "longshort": 1}
_MA, _BB, _RSI = 0, 1, 2

_REL_TOL = 1e-9  # vectorbt.utils.math_.rel_tol
_ABS_TOL = 1e-12  # vectorbt.utils.math_.abs_tol
_MIN_SIZE = 1e-8  # vectorbt portfolio default min_size: smaller orders are rejected
_INV_COND_TOL = np.finfo(np.float64).eps * 1e3  # vectorbt.generic.nb._INV_COND_TOL


@njit(cache=True, inline="always")
def _is_close(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b) or np.isinf(a) or np.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), _ABS_TOL)


@njit(cache=True, inline="always")
def _is_less(a: float, b: float) -> bool:
    if _is_close(a, b):
        return False
    return a < b


@njit(cache=True, inline="always")
def _is_close_or_less(a: float, b: float) -> bool:
    if _is_close(a, b):
        return True
    return a < b


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
def _snap(a: float) -> float:
    """execute_order_nb snaps state values that are approximately zero to zero."""
    return 0.0 if _is_close(a, 0.0) else a


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
def gain_loss_sums(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running sums of bar gains and losses (RSI's rolling means; bar 0's diff is NaN -> 0)."""
    n = close.shape[0]
    up = np.zeros(n, dtype=np.float64)
    dn = np.zeros(n, dtype=np.float64)
    su = 0.0
    sd = 0.0
    for i in range(1, n):
        delta = close[i] - close[i - 1]
        su = su + (delta if delta > 0.0 else 0.0)
        sd = sd + (abs(delta) if delta < 0.0 else 0.0)
        up[i] = su
        dn[i] = sd
    return up, dn


@njit(cache=True, inline="always")
def _var_add(val, nobs, mean, m2, comp, unstable):
    """vectorbt ``_add_var_nb`` (pandas' Kahan-compensated Welford step)."""
    prev_m2 = m2
    nobs += 1.0
    prev_mean = mean - comp
    y = val - comp
    delta = y - mean
    comp = delta + mean - y
    mean += delta / nobs
    m2 += (val - prev_mean) * (val - mean)
    if prev_m2 * _INV_COND_TOL > m2:
        unstable = True
    return nobs, mean, m2, comp, unstable


@njit(cache=True, inline="always")
def _var_remove(val, nobs, mean, m2, comp, unstable):
    """vectorbt ``_remove_var_nb``."""
    prev_m2 = m2
    nobs -= 1.0
    if nobs:
        prev_mean = mean - comp
        y = val - comp
        delta = y - mean
        comp = delta + mean - y
        mean -= delta / nobs
        m2 -= (val - prev_mean) * (val - mean)
        if prev_m2 * _INV_COND_TOL > m2:
            unstable = True
    else:
        mean = 0.0
        m2 = 0.0
        unstable = False
    return nobs, mean, m2, comp, unstable


@njit(cache=True, inline="always")
def _first_signal_bar(family: int, w1: int, w2: int) -> int:
    """First bar whose indicator is defined (signals before it are all False)."""
    if family == _MA:
        return w2 - 1 if w2 > w1 else w1 - 1
    if family == _BB:
        return w1 - 1
    return w1


@njit(cache=True, inline="always")
def _crossed_above(a, b, was_below, ago):
    """One bar of vectorbt's `crossed_above_1d_nb` (wait=0): True on the bar `a` first rises
    above `b` after having been below it. Returns (crossed, was_below, ago)."""
    crossed = False
    if a > b:
        if was_below:
            ago += 1
            crossed = ago == 0
    elif a == b:
        ago = -1
    else:
        ago = -1
        was_below = True
    return crossed, was_below, ago


@njit(cache=True, inline="always")
def _ma_signals(cumsum, i, w1, w2, up_was_below, up_ago, dn_was_below, dn_ago):
    """MA crossover at bar i: fast crosses above slow (entry) / below (exit), with the state
    of both `crossed_above_1d_nb` machines (wait=0) carried from bar to bar."""
    fm = _sma(cumsum, i, w1)
    sm = _sma(cumsum, i, w2)
    entry, up_was_below, up_ago = _crossed_above(fm, sm, up_was_below, up_ago)
    exit_, dn_was_below, dn_ago = _crossed_above(sm, fm, dn_was_below, dn_ago)
    return entry, exit_, up_was_below, up_ago, dn_was_below, dn_ago


@njit(cache=True, inline="always")
def _bb_bands(cumsum, i, w1, x1, nobs, m2):
    """Bollinger bands at bar i: (lower, upper) = SMA -/+ x1 population std."""
    mid = _sma(cumsum, i, w1)
    std = np.sqrt(m2 / nobs)
    return mid - x1 * std, mid + x1 * std


@njit(cache=True, inline="always")
def _rsi_signals(cum_up, cum_dn, i, w1, x1, x2):
    """RSI threshold at bar i (SMA variant): enter below x1, exit above x2."""
    gain = (cum_up[i] - cum_up[i - w1]) / w1
    loss = (cum_dn[i] - cum_dn[i - w1]) / w1
    no_loss = np.nan if gain == 0.0 else 100.0
    rsi = no_loss if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return rsi < x1, rsi > x2


@njit(cache=True, inline="always")
def _order_kind(entry, exit_, direction, position):
    """`signals_to_size_nb`: 0 none, 1 buy with all cash, 2 sell the long, 3 sell all
    (close + short)."""
    long_entry = entry
    short_entry = False
    long_exit = False
    if direction == 0:
        long_exit = exit_
        if long_entry and long_exit:  # upon_long_conflict='ignore'
            long_entry = False
            long_exit = False
    else:
        short_entry = exit_
        if long_entry and short_entry:  # upon_dir_conflict='ignore'
            long_entry = False
            short_entry = False
    kind = 0
    if position > 0.0:
        if short_entry:
            kind = 3
        elif long_exit:
            kind = 2
    elif position < 0.0:
        if long_entry:
            kind = 1
    else:
        if long_entry:
            kind = 1
        elif short_entry:
            kind = 3
    return kind


@njit(cache=True, inline="always")
def _buy_all(price, slippage, fees, cash, free_cash, debt, position):
    """`buy_nb(size=inf)`: spend all cash, covering a short first.
    Returns (traded, size, price, fees, cash, free_cash, debt, position)."""
    traded = False
    o_size = 0.0
    o_price = 0.0
    o_fees = 0.0
    adj_price = price * (1.0 + slippage)
    cash_limit = cash
    if cash_limit != 0.0:
        max_req_cash = _add(cash_limit, -0.0) / (1.0 + fees)
        if max_req_cash > 0.0:
            final_size = max_req_cash / adj_price
            if not _is_less(final_size, _MIN_SIZE):
                fees_paid = cash_limit - max_req_cash
                new_position = _add(position, final_size)
                if position < 0.0:
                    short_size = final_size if new_position < 0.0 else abs(position)
                    avg_entry = debt / abs(position)
                    debt_diff = short_size * avg_entry
                    debt = _add(debt, -debt_diff)
                    free_cash = _add(free_cash + 2 * debt_diff, -cash_limit)
                else:
                    free_cash = _add(free_cash, -cash_limit)
                cash = _add(cash, -cash_limit)
                position = new_position
                traded = True
                o_size = final_size
                o_price = adj_price
                o_fees = fees_paid
    return traded, o_size, o_price, o_fees, cash, free_cash, debt, position


@njit(cache=True, inline="always")
def _sell(kind, price, slippage, fees, cash, free_cash, debt, position):
    """`sell_nb`: close the long (kind 2) or sell 100 % (kind 3: close and go short with all
    free cash). Returns (traded, size, price, fees, cash, free_cash, debt, position)."""
    traded = False
    o_size = 0.0
    o_price = 0.0
    o_fees = 0.0
    adj_price = price * (1.0 - slippage)
    ok = True
    if kind == 2:
        size_limit = position
        if position == 0.0:
            ok = False
    else:
        long_size = max(position, 0.0)
        long_cash = long_size * adj_price * (1.0 - fees)
        total_free = _add(free_cash, long_cash)
        if total_free <= 0.0:
            if position <= 0.0:
                ok = False
            size_limit = long_size
        else:
            max_short = _add(total_free, -0.0) / (adj_price * (1.0 + fees))
            size_limit = _add(long_size, max_short)
            if size_limit <= 0.0:
                ok = False
        size_limit = 1.0 * size_limit
    if ok and not _is_close(size_limit, 0.0) and not _is_less(size_limit, _MIN_SIZE):
        acq_cash = size_limit * adj_price
        fees_paid = acq_cash * fees
        final_acq = _add(acq_cash, -fees_paid)
        if final_acq >= 0.0:
            new_position = _add(position, -size_limit)
            if new_position < 0.0:
                short_size = size_limit if position < 0.0 else abs(new_position)
                short_value = short_size * adj_price
                debt = debt + short_value
                free_cash = _add(free_cash, _add(final_acq, -2 * short_value))
            else:
                free_cash = free_cash + final_acq
            cash = cash + final_acq
            position = new_position
            traded = True
            o_size = size_limit
            o_price = adj_price
            o_fees = fees_paid
    return traded, o_size, o_price, o_fees, cash, free_cash, debt, position


@njit(cache=True, inline="always")
def _book_exit_trades(
    o_size, o_price, o_fees, o_buy, in_trade, trade_long, e_size, e_gross, e_fees, wins, closed
):
    """`get_exit_trades_nb` for one fill: grow, reduce or reverse the open trade, counting
    closed trades and winners. Returns (in_trade, trade_long, e_size, e_gross, e_fees, wins,
    closed)."""
    if not in_trade:
        in_trade = True
        trade_long = o_buy
        e_size = 0.0
        e_gross = 0.0
        e_fees = 0.0
    if trade_long == o_buy:
        e_size += o_size
        e_gross += o_size * o_price
        e_fees += o_fees
    elif _is_close_or_less(o_size, e_size):
        exit_size = e_size if _is_close(o_size, e_size) else o_size
        entry_price = e_gross / e_size
        entry_fees = (exit_size / e_size) * e_fees
        val_diff = _add(exit_size * o_price, -(exit_size * entry_price))
        if val_diff != 0.0 and not trade_long:
            val_diff *= -1.0
        if val_diff - entry_fees - o_fees > 0.0:
            wins += 1
        closed += 1
        if _is_close(o_size, e_size):
            in_trade = False
        else:
            frac = (e_size - o_size) / e_size
            e_size *= frac
            e_gross *= frac
            e_fees *= frac
    else:  # reversal: close the whole trade, open the opposite one with the rest
        cl_size = e_size
        cl_fees = cl_size / o_size * o_fees
        entry_price = e_gross / e_size
        entry_fees = (cl_size / e_size) * e_fees
        val_diff = _add(cl_size * o_price, -(cl_size * entry_price))
        if val_diff != 0.0 and not trade_long:
            val_diff *= -1.0
        if val_diff - entry_fees - cl_fees > 0.0:
            wins += 1
        closed += 1
        e_size = o_size - cl_size
        e_gross = e_size * o_price
        e_fees = o_fees - cl_fees
        trade_long = not trade_long
    return in_trade, trade_long, e_size, e_gross, e_fees, wins, closed


@njit(cache=True, inline="always")
def _add_return(value, prev_value, sum_r, sum_r2, sum_down2, cumprod, peak, max_dd):
    """One bar's return of ``pf.value()`` into the running sums, cumulative product, peak and
    max drawdown. Returns (sum_r, sum_r2, sum_down2, cumprod, peak, max_dd)."""
    if prev_value == 0.0:
        r = 0.0 if value == 0.0 else np.inf * np.sign(value)
    else:
        r = (value - prev_value) / prev_value
        if prev_value < 0.0:
            r = -r
    sum_r += r
    sum_r2 += r * r
    if r < 0.0:
        sum_down2 += r * r
    cumprod *= r + 1.0
    cum = cumprod * 100.0
    if cum > peak:
        peak = cum
    dd = cum / peak - 1.0
    # NaN (an infinite return once equity touched 0) sticks, as in vectorbt's min
    if dd < max_dd or dd != dd:
        max_dd = dd
    return sum_r, sum_r2, sum_down2, cumprod, peak, max_dd


@njit(cache=True, inline="always")
def _write_metrics(
    out,
    col,
    seg,
    n,
    total_return,
    sum_r,
    sum_r2,
    sum_down2,
    ann_factor,
    max_dd,
    wins,
    closed,
    open_trade,
    in_market,
):
    """A segment's metrics into rows ``seg * N_METRICS ...`` of column ``col`` of ``out``."""
    if n < 2:
        sharpe = np.nan
        sortino = np.nan
    else:
        mean_r = sum_r / n
        ssd = sum_r2 - sum_r * mean_r
        if ssd < 0.0:
            ssd = 0.0
        std_r = math.sqrt(ssd / n * n / (n - 1))
        sharpe = np.inf if std_r == 0.0 else mean_r / std_r * math.sqrt(ann_factor)
        downside = math.sqrt(sum_down2 / n) * math.sqrt(ann_factor)
        sortino = np.inf if downside == 0.0 else mean_r * ann_factor / downside
    base = seg * N_METRICS
    out[base + 0, col] = total_return
    out[base + 1, col] = sharpe
    out[base + 2, col] = sortino
    out[base + 3, col] = max_dd
    out[base + 4, col] = wins / closed if closed > 0 else np.nan
    out[base + 5, col] = float(closed + open_trade)
    out[base + 6, col] = in_market / n


@njit(cache=True)
def simulate(
    close: np.ndarray,
    cumsum: np.ndarray,
    cum_up: np.ndarray,
    cum_dn: np.ndarray,
    family: int,
    w1: int,
    w2: int,
    x1: float,
    x2: float,
    direction: int,
    fees: float,
    slippage: float,
    init_cash: float,
    ann_factor: float,
    bounds: np.ndarray,
    out: np.ndarray,
    col: int,
    equity: np.ndarray,
    write_equity: bool,
) -> None:
    """Simulate one parameter set over every segment of ``bounds``.

    Metrics of segment s go to ``out[s * N_METRICS + j, col]``; with ``write_equity`` the
    portfolio value of every bar in the segments goes to ``equity`` (``init_cash`` before).
    Parameters per family: MA (w1=fast, w2=slow), Bollinger (w1=window, x1=width),
    RSI (w1=window, x1=low, x2=high). Each bar: the family's signals, the order they make
    (shared by every family), the exit-trade book, the return; a segment's last bar writes
    its metrics.
    """
    n_seg = bounds.shape[0] - 1
    end = bounds[n_seg]
    first = _first_signal_bar(family, w1, w2)
    # crossover state machines (crossed_above_1d_nb with wait=0)
    up_was_below = False
    up_ago = -1
    dn_was_below = False
    dn_ago = -1
    # Bollinger rolling-std state (rolling_std_1d_nb)
    nobs = 0.0
    mean = 0.0
    m2 = 0.0
    comp_add = 0.0
    comp_rem = 0.0
    unstable = False

    seg = 0
    seg_start = bounds[0]
    seg_end = bounds[1]
    # portfolio state (declared here; reset at each segment start)
    cash = init_cash
    free_cash = init_cash
    debt = 0.0
    position = 0.0
    lcash = init_cash  # cash_nb ledger (what pf.value() uses)
    tp_cash = 0.0  # total_profit_nb ledger
    n_orders = 0
    prev_value = init_cash
    sum_r = 0.0
    sum_r2 = 0.0
    sum_down2 = 0.0
    cumprod = 1.0
    peak = -np.inf  # expanding max of cum returns, seeded by the first bar
    max_dd = 0.0
    in_market = 0
    closed = 0
    wins = 0
    in_trade = False
    trade_long = True
    e_size = 0.0
    e_gross = 0.0
    e_fees = 0.0

    if write_equity:
        for i in range(min(seg_start, end)):
            equity[i] = init_cash

    for i in range(end):
        # ---------------------------------------------------------------- signals
        entry = False
        exit_ = False
        if family == _MA:
            if i >= first:
                entry, exit_, up_was_below, up_ago, dn_was_below, dn_ago = _ma_signals(
                    cumsum, i, w1, w2, up_was_below, up_ago, dn_was_below, dn_ago
                )
        elif family == _BB:
            # rolling_std_1d_nb's Welford state, moved to bar i (recomputed over the window on
            # the first bar and whenever the running update became unstable)
            if i > 0:
                if i >= w1:
                    nobs, mean, m2, comp_rem, unstable = _var_remove(
                        close[i - w1], nobs, mean, m2, comp_rem, unstable
                    )
                nobs, mean, m2, comp_add, unstable = _var_add(
                    close[i], nobs, mean, m2, comp_add, unstable
                )
            if i == 0 or unstable:
                nobs = 0.0
                mean = 0.0
                m2 = 0.0
                comp_add = 0.0
                comp_rem = 0.0
                for j in range(max(0, i - w1 + 1), i + 1):
                    nobs, mean, m2, comp_add, unstable = _var_add(
                        close[j], nobs, mean, m2, comp_add, unstable
                    )
                unstable = False
            if i >= first:
                lower, upper = _bb_bands(cumsum, i, w1, x1, nobs, m2)
                entry = close[i] < lower
                exit_ = close[i] > upper
        else:
            if i >= first:
                entry, exit_ = _rsi_signals(cum_up, cum_dn, i, w1, x1, x2)

        if i < seg_start:
            continue

        # ---------------------------------------------------------------- orders
        price = close[i]
        kind = _order_kind(entry, exit_, direction, position)
        traded = False
        o_size = 0.0
        o_price = 0.0
        o_fees = 0.0
        o_buy = True
        if kind != 0:
            cash = _snap(cash)
            position = _snap(position)
            debt = _snap(debt)
            free_cash = _snap(free_cash)
        if kind == 1:
            traded, o_size, o_price, o_fees, cash, free_cash, debt, position = _buy_all(
                price, slippage, fees, cash, free_cash, debt, position
            )
        elif kind == 2 or kind == 3:
            traded, o_size, o_price, o_fees, cash, free_cash, debt, position = _sell(
                kind, price, slippage, fees, cash, free_cash, debt, position
            )
            o_buy = False

        if traded:
            n_orders += 1
            if o_buy:
                flow = -o_size * o_price - o_fees
                tp_cash = _add(tp_cash, -(o_size * o_price + o_fees))
            else:
                flow = o_size * o_price - o_fees
                tp_cash = _add(tp_cash, o_size * o_price - o_fees)
            lcash = _add(lcash, _add(0.0, flow))
            in_trade, trade_long, e_size, e_gross, e_fees, wins, closed = _book_exit_trades(
                o_size, o_price, o_fees, o_buy, in_trade, trade_long, e_size, e_gross, e_fees,
                wins, closed,
            )  # fmt: skip

        # ---------------------------------------------------------------- returns
        if position != 0.0:
            in_market += 1
        if position != 0.0 or traded:
            value = lcash + position * price
            sum_r, sum_r2, sum_down2, cumprod, peak, max_dd = _add_return(
                value, prev_value, sum_r, sum_r2, sum_down2, cumprod, peak, max_dd
            )
            prev_value = value
            if write_equity:
                equity[i] = value
        else:
            # flat bar: r = 0, cum unchanged; it can only seed the peak (first bar flat)
            if peak == -np.inf:
                peak = cumprod * 100.0
            if write_equity:
                equity[i] = lcash

        if i == seg_end - 1:
            # ------------------------------------------------------------ segment metrics
            n = seg_end - seg_start
            total_return = 0.0 if n_orders == 0 else (tp_cash + position * price) / init_cash
            open_trade = 1 if (in_trade and _is_less(-e_size, 0.0)) else 0
            _write_metrics(
                out, col, seg, n, total_return, sum_r, sum_r2, sum_down2, ann_factor, max_dd,
                wins, closed, open_trade, in_market,
            )  # fmt: skip
            seg += 1
            if seg < n_seg:
                seg_start = bounds[seg]
                seg_end = bounds[seg + 1]
                cash = init_cash
                free_cash = init_cash
                debt = 0.0
                position = 0.0
                lcash = init_cash
                tp_cash = 0.0
                n_orders = 0
                prev_value = init_cash
                sum_r = 0.0
                sum_r2 = 0.0
                sum_down2 = 0.0
                cumprod = 1.0
                peak = -np.inf  # expanding max of cum returns, seeded by the first bar
                max_dd = 0.0
                in_market = 0
                closed = 0
                wins = 0
                in_trade = False
                e_size = 0.0
                e_gross = 0.0
                e_fees = 0.0


@njit(parallel=True, cache=True, fastmath=False)
def sweep_kernel(
    close: np.ndarray,
    family: int,
    w1: np.ndarray,
    w2: np.ndarray,
    x1: np.ndarray,
    x2: np.ndarray,
    direction: int,
    fees: float,
    slippage: float,
    init_cash: float,
    ann_factor: float,
    bounds: np.ndarray,
) -> np.ndarray:
    """Metrics of every parameter set k; shape (n_segments * N_METRICS, len(w1))."""
    cumsum = running_sum(close)
    if family == _RSI:
        cum_up, cum_dn = gain_loss_sums(close)
    else:
        cum_up = np.empty(0, dtype=np.float64)
        cum_dn = np.empty(0, dtype=np.float64)
    m = w1.shape[0]
    out = np.empty(((bounds.shape[0] - 1) * N_METRICS, m), dtype=np.float64)
    dummy = np.empty(0, dtype=np.float64)
    for k in prange(m):
        simulate(
            close, cumsum, cum_up, cum_dn, family, w1[k], w2[k], x1[k], x2[k], direction,
            fees, slippage, init_cash, ann_factor, bounds, out, k, dummy, False,
        )  # fmt: skip
    return out


@njit(cache=True)
def equity_kernel(
    close: np.ndarray,
    family: int,
    w1: int,
    w2: int,
    x1: float,
    x2: float,
    direction: int,
    fees: float,
    slippage: float,
    init_cash: float,
    bounds: np.ndarray,
) -> np.ndarray:
    """Portfolio value at every bar for one parameter set (vectorbt ``pf.value()``)."""
    cumsum = running_sum(close)
    if family == _RSI:
        cum_up, cum_dn = gain_loss_sums(close)
    else:
        cum_up = np.empty(0, dtype=np.float64)
        cum_dn = np.empty(0, dtype=np.float64)
    out = np.empty(((bounds.shape[0] - 1) * N_METRICS, 1), dtype=np.float64)
    equity = np.empty(bounds[bounds.shape[0] - 1], dtype=np.float64)
    simulate(
        close, cumsum, cum_up, cum_dn, family, w1, w2, x1, x2, direction,
        fees, slippage, init_cash, 1.0, bounds, out, 0, equity, True,
    )  # fmt: skip
    return equity


def metrics_dict(out: np.ndarray, segment: int = 0) -> dict[str, np.ndarray]:
    """Rows of one segment of a kernel result as `METRIC_KEYS` -> array (trade_count int64)."""
    base = segment * N_METRICS
    metrics = {key: out[base + j].copy() for j, key in enumerate(METRIC_KEYS)}
    metrics["trade_count"] = metrics["trade_count"].astype(np.int64)
    return metrics
