"""The shipped demo series is real data, runs through the kernel and matches vectorbt."""

from __future__ import annotations

from pathlib import Path

import qpipe_dagster
from qpipe_dagster.backtest.reference import vectorbt_ma_crossover
from qpipe_dagster.backtest.strategies import ma_crossover_sweep
from qpipe_dagster.market.prices import load_prices
from qpipe_dagster_tests.backtest.helpers import assert_metrics_match

DEMO = Path(qpipe_dagster.__file__).parent / "demo" / "prices" / "BTC-USD.csv"


def test_demo_prices_backtest_like_vectorbt() -> None:
    data = load_prices(DEMO)
    assert data.report["rows"] == 4000
    assert data.report["bar_interval_s"] == 3600.0
    assert DEMO.stat().st_size < 400_000
    close = data.frame["close"].to_numpy()
    ours = ma_crossover_sweep(close, [10, 24], [50, 100], periods_per_year=8760)
    ref = vectorbt_ma_crossover(close, [10, 24], [50, 100], periods_per_year=8760)
    assert_metrics_match(ours, ref)
