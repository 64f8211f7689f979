"""Bad kernel/grid input is refused before any compute, with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from qpipe_dagster.backtest.grid import ma_crossover_grid
from qpipe_dagster.backtest.strategies import ma_crossover_equity, ma_crossover_sweep
from qpipe_dagster.backtest.validation import validate_inputs
from qpipe_dagster_tests.backtest.helpers import gbm_path

CLOSE = gbm_path(1, 200)


def sweep(close=CLOSE, fast=(5,), slow=(20,), **kw):
    kw.setdefault("periods_per_year", 8760)
    return ma_crossover_sweep(close, np.array(fast), np.array(slow), **kw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"close": np.where(np.arange(200) == 17, np.nan, CLOSE)}, "NaN/inf price.*bar 17"),
        ({"close": np.where(np.arange(200) == 5, 0.0, CLOSE)}, "non-positive price 0.0 at bar 5"),
        ({"close": -CLOSE}, "non-positive"),
        ({"close": np.array([])}, "close is empty"),
        ({"close": CLOSE.reshape(20, 10)}, "1-D"),
        ({"close": CLOSE[:20]}, "too few bars: slow window 20"),
        ({"fast": (), "slow": ()}, "empty parameter grid"),
        ({"fast": (0,), "slow": (5,)}, "windows must be >= 1"),
        ({"fast": (np.inf,), "slow": (20,)}, "fast inf is too large for a window"),
        ({"fast": (20,), "slow": (5,)}, r"fast window must be < slow window, pair 0 is \(20, 5\)"),
        ({"fast": (5, 6), "slow": (20,)}, "2 fast vs 1 slow"),
        ({"fast": (2.5,), "slow": (20,)}, "whole numbers"),
        ({"fees": -0.1}, "fees must be a fraction"),
        ({"fees": float("nan")}, "fees must be a fraction"),
        ({"slippage": 1.5}, "slippage must be a fraction"),
        ({"init_cash": 0.0}, "init_cash must be a positive"),
        ({"periods_per_year": 0}, "periods_per_year must be a positive"),
        ({"direction": "shortonly"}, "direction must be one of"),
    ],
)
def test_bad_sweep_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sweep(**kwargs)


def test_equity_takes_one_pair() -> None:
    with pytest.raises(ValueError, match="too few bars"):
        ma_crossover_equity(CLOSE[:10], 3, 10)
    assert ma_crossover_equity(CLOSE, 3, 10).shape == CLOSE.shape


def test_float_windows_that_are_whole_are_accepted() -> None:
    out = sweep(fast=np.array([5.0]), slow=np.array([20.0]))
    assert out["total_return"].shape == (1,)


def test_grid_all_pairs_fast_below_slow() -> None:
    fast, slow = ma_crossover_grid(range(2, 101), range(2, 101))
    assert fast.dtype == slow.dtype == np.int64
    assert fast.shape[0] == 4851 == 99 * 98 // 2
    assert (fast < slow).all()
    assert len(set(zip(fast.tolist(), slow.tolist(), strict=True))) == 4851


@pytest.mark.parametrize(
    ("fast", "slow", "kw", "message"),
    [
        ([], [5], {}, "fast window list is empty"),
        ([3], [], {}, "slow window list is empty"),
        ([0, 3], [5], {}, "fast windows must be >= 1, got 0"),
        ([10, 20], [5, 8], {}, "empty grid: no fast < slow pair"),
        ([2.5], [5], {}, "must be integers"),
        ([5], [50], {"n_bars": 50}, "window 50 needs more than 50 bars, got 50"),
    ],
)
def test_bad_grid_is_named(fast, slow, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        ma_crossover_grid(fast, slow, **kw)


def test_reference_windows_refuse_values_int64_cannot_hold() -> None:
    """inf/1e30 must not wrap to a negative int64 and be reported as a window < 1."""
    with pytest.raises(ValueError, match="fast window inf is too large"):
        validate_inputs(CLOSE, [np.inf], [20])
    with pytest.raises(ValueError, match=r"slow window 1e[+]30 is too large"):
        validate_inputs(CLOSE, [5], [1e30])
