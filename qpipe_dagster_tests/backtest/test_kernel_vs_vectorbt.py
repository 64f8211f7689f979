"""The fused kernel must reproduce vectorbt's from_signals numbers to 1e-9 (fees included)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpipe_dagster.backtest.grid import ma_crossover_grid
from qpipe_dagster.backtest.reference import vectorbt_ma_crossover, vectorbt_ma_equity
from qpipe_dagster.backtest.strategies import ma_crossover_equity, ma_crossover_sweep
from qpipe_dagster.market.prices import load_prices
from qpipe_dagster_tests.backtest.helpers import SHARED_MARKET, assert_metrics_match, gbm_path


@st.composite
def sweep_case(draw: st.DrawFn) -> dict:
    n = draw(st.integers(70, 500))
    close = gbm_path(draw(st.integers(0, 2**31)), n, vol=draw(st.sampled_from([0.002, 0.01, 0.04])))
    if draw(st.booleans()):
        # coarse ticks make exact SMA ties, which exercise vectorbt's tie rules
        close = np.maximum(np.round(close / 2.0) * 2.0, 1.0)
    n_pairs = draw(st.integers(1, 6))
    fast = draw(st.lists(st.integers(1, 20), min_size=n_pairs, max_size=n_pairs))
    slow = [f + draw(st.integers(1, 40)) for f in fast]
    return {
        "close": close,
        "fast": np.array(fast),
        "slow": np.array(slow),
        "fees": draw(st.sampled_from([0.0, 0.001, 0.0025])),
        "slippage": draw(st.sampled_from([0.0, 0.0005])),
        "init_cash": draw(st.sampled_from([100.0, 10_000.0])),
        "periods_per_year": draw(st.sampled_from([8760.0, 365.0])),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweep_case())
def test_random_paths_match_vectorbt(case: dict) -> None:
    ours = ma_crossover_sweep(**case)
    ref = vectorbt_ma_crossover(**case)
    assert_metrics_match(ours, ref)


@pytest.mark.parametrize("fees", [0.0, 0.001])
def test_grid_matches_vectorbt_fees_on_and_off(fees: float) -> None:
    close = gbm_path(7, 1500)
    fast, slow = ma_crossover_grid(range(2, 30, 3), range(5, 80, 7))
    ours = ma_crossover_sweep(close, fast, slow, fees=fees, periods_per_year=8760)
    ref = vectorbt_ma_crossover(close, fast, slow, fees=fees, periods_per_year=8760)
    assert_metrics_match(ours, ref)
    assert ours["trade_count"].dtype == np.int64
    assert (ours["trade_count"] > 0).all()  # the comparison is not vacuous


def test_fees_change_the_result() -> None:
    """Guards against a kernel that ignores fees (and a test that cannot see it)."""
    close = gbm_path(3, 800)
    free = ma_crossover_sweep(close, [5], [20], fees=0.0, periods_per_year=8760)
    paid = ma_crossover_sweep(close, [5], [20], fees=0.002, periods_per_year=8760)
    assert paid["total_return"][0] < free["total_return"][0]


def test_equity_curve_matches_vectorbt_value() -> None:
    close = gbm_path(11, 1200)
    ours = ma_crossover_equity(close, 6, 31, fees=0.001, slippage=0.0005)
    ref = vectorbt_ma_equity(close, 6, 31, fees=0.001, slippage=0.0005)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    sweep = ma_crossover_sweep(close, [6], [31], fees=0.001, slippage=0.0005, periods_per_year=8760)
    assert ours[-1] / 10_000.0 - 1.0 == pytest.approx(sweep["total_return"][0], rel=1e-9)


def test_no_trade_pair_matches_vectorbt_conventions() -> None:
    """A monotonic series never crosses: vectorbt reports 0 return, inf Sharpe, NaN win rate."""
    close = np.linspace(100.0, 200.0, 300)
    ours = ma_crossover_sweep(close, [3], [10], periods_per_year=8760)
    ref = vectorbt_ma_crossover(close, [3], [10], periods_per_year=8760)
    assert_metrics_match(ours, ref)
    assert ours["trade_count"][0] == 0 and np.isnan(ours["win_rate"][0])


@pytest.mark.parametrize("symbol", ["BTC_USD_hourly.csv", "ETH_USD_hourly.csv"])
def test_real_hourly_slice_matches_vectorbt(symbol: str) -> None:
    path = SHARED_MARKET / symbol
    if not path.exists():
        pytest.skip(f"real market data not present at {path} (shared data folder absent)")
    close = load_prices(path).frame["close"].to_numpy()[-4000:]
    fast, slow = ma_crossover_grid(range(2, 50, 6), range(10, 200, 15))
    ours = ma_crossover_sweep(close, fast, slow, fees=0.001, periods_per_year=8760)
    ref = vectorbt_ma_crossover(close, fast, slow, fees=0.001, periods_per_year=8760)
    assert_metrics_match(ours, ref)
