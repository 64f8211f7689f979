"""Per-bar returns of every parameter set, reduced to power sums in one pass.

DSR needs the skewness and kurtosis of each set's in-sample returns and PBO needs each set's
Sharpe on any union of blocks; both follow from power sums (n, sum r, r^2, r^3, r^4), so a
sweep of a million sets never holds its return series. The portfolio is the kernels' own
`simulate` (vectorbt's ``pf.value()`` returns, ``init_cash`` before the first bar), run once
over the whole series. This pass is CPU Numba even when the sweep ran on the GPU.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qpipe_dagster.backtest.kernels import (
    DIRECTION_CODES,
    FAMILY_CODES,
    N_METRICS,
    gain_loss_sums,
    running_sum,
    simulate,
)
from qpipe_dagster.backtest.strategies import StrategyGrid
from qpipe_dagster.backtest.validation import validate_close, validate_costs, validate_direction


@njit(parallel=True, cache=True)
def _power_sums(
    close, family, w1, w2, x1, x2, direction, fees, slippage, init_cash, blocks, is_end
):
    n = close.shape[0]
    m = w1.shape[0]
    n_blocks = blocks.shape[0] - 1
    cumsum = running_sum(close)
    if family == 2:
        cum_up, cum_dn = gain_loss_sums(close)
    else:
        cum_up = np.empty(0, dtype=np.float64)
        cum_dn = np.empty(0, dtype=np.float64)
    bsum = np.zeros((m, n_blocks))
    bsq = np.zeros((m, n_blocks))
    is_sums = np.zeros((m, 4))
    whole = np.array([0, n], dtype=np.int64)
    for k in prange(m):
        out = np.empty((N_METRICS, 1), dtype=np.float64)
        eq = np.empty(n, dtype=np.float64)
        simulate(
            close, cumsum, cum_up, cum_dn, family, w1[k], w2[k], x1[k], x2[k], direction,
            fees, slippage, init_cash, 1.0, whole, out, 0, eq, True,
        )  # fmt: skip
        prev = init_cash
        b = 0
        for i in range(n):
            r = eq[i] / prev - 1.0
            prev = eq[i]
            if i < is_end:
                r2 = r * r
                is_sums[k, 0] += r
                is_sums[k, 1] += r2
                is_sums[k, 2] += r2 * r
                is_sums[k, 3] += r2 * r2
            if blocks[0] <= i < blocks[n_blocks]:
                while i >= blocks[b + 1]:
                    b += 1
                bsum[k, b] += r
                bsq[k, b] += r * r
    return bsum, bsq, is_sums


@njit(cache=True)
def _returns(close, family, w1, w2, x1, x2, direction, fees, slippage, init_cash, end):
    n = close.shape[0]
    cumsum = running_sum(close)
    if family == 2:
        cum_up, cum_dn = gain_loss_sums(close)
    else:
        cum_up = np.empty(0, dtype=np.float64)
        cum_dn = np.empty(0, dtype=np.float64)
    whole = np.array([0, n], dtype=np.int64)
    res = np.empty((end, w1.shape[0]), dtype=np.float64)
    out = np.empty((N_METRICS, 1), dtype=np.float64)
    eq = np.empty(n, dtype=np.float64)
    for k in range(w1.shape[0]):
        simulate(
            close, cumsum, cum_up, cum_dn, family, w1[k], w2[k], x1[k], x2[k], direction,
            fees, slippage, init_cash, 1.0, whole, out, 0, eq, True,
        )  # fmt: skip
        prev = init_cash
        for i in range(end):
            res[i, k] = eq[i] / prev - 1.0
            prev = eq[i]
    return res


def _args(close: np.ndarray, grid: StrategyGrid, costs: dict) -> tuple:
    validate_direction(costs.get("direction", "longonly"))
    validate_costs(
        costs.get("fees", 0.001), costs.get("slippage", 0.0), costs.get("init_cash", 1e4)
    )
    arr = validate_close(close)
    grid.check_bars(arr.shape[0])
    w1, w2, x1, x2 = grid.kernel_arrays()
    return (
        arr, FAMILY_CODES[grid.family], w1, w2, x1, x2,
        DIRECTION_CODES[costs.get("direction", "longonly")],
        float(costs.get("fees", 0.001)), float(costs.get("slippage", 0.0)),
        float(costs.get("init_cash", 10_000.0)),
    )  # fmt: skip


def power_sums(
    close: np.ndarray, grid: StrategyGrid, blocks: np.ndarray, is_end: int, **costs: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block sums [N, S], block sums of squares [N, S], in-sample sums r..r^4 [N, 4]).

    ``blocks`` are increasing bar indices (S + 1 edges); bars outside them are left out of
    the block sums. ``is_end`` is the first out-of-sample bar (n for no split). ``costs``
    are ``fees``, ``slippage``, ``init_cash`` and ``direction`` as in the sweep.
    """
    b = np.asarray(blocks, dtype=np.int64)
    if b.ndim != 1 or b.shape[0] < 2 or (np.diff(b) < 1).any():
        raise ValueError(f"blocks must be increasing bar indices, got {b}")
    return _power_sums(*_args(close, grid, costs), b, int(is_end))  # pyright: ignore[reportCallIssue]


def trial_returns(
    close: np.ndarray, grid: StrategyGrid, end: int | None = None, **costs: object
) -> np.ndarray:
    """Per-bar returns (bars 0..end-1 x sets) of every set of ``grid``: for small grids and
    the sample `stats.mean_correlation` reads, never for a whole large sweep."""
    args = _args(close, grid, costs)
    return _returns(*args, int(args[0].shape[0] if end is None else end))  # pyright: ignore[reportCallIssue]
