"""What backtest_results shows about a sweep: bars per year, figures, order and charts."""

from __future__ import annotations

import numpy as np
import pytest

from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import bollinger_grid, ma_grid
from qpipe_dagster.backtest.summary import SECONDS_PER_YEAR, periods_per_year, sweep_metadata
from qpipe_dagster.metadata import Markdown
from qpipe_dagster_tests.backtest.helpers import gbm_path

N = 600
TS = np.datetime64("2024-01-01T00:00", "us") + np.arange(N).astype("timedelta64[h]")


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(TS, 8760.0), (TS[::24], 365.0), (TS[:1], 8760.0)],  # hourly, daily, one bar: hourly
)
def test_periods_per_year_from_the_median_bar(ts: np.ndarray, expected: float) -> None:
    assert periods_per_year(ts) == pytest.approx(expected)
    assert SECONDS_PER_YEAR == 365 * 24 * 3600


def test_sweep_metadata_order_figures_and_charts() -> None:
    grids = [ma_grid(range(2, 10, 4), range(20, 50, 15)), bollinger_grid([10, 20], [2.0])]
    report = sweep_families(
        gbm_path(3, N), TS, grids, split_fraction=0.5, periods_per_year=8760, backend="cpu"
    )
    md = sweep_metadata(report, TS, concept="demo", direction="longonly", trials={"dsr": 0.9})
    assert md["parameter_sets"] == report.table.num_rows and md["bars"] == N
    assert md["families"] == "ma_crossover, bollinger" and md["split_bar"] == 300
    assert md["split_ts"] == str(TS[300]) and md["fallback_reason"] == "none"
    compute = md["compute_seconds"]
    assert isinstance(compute, float) and md["stage_seconds"] == round(compute, 3)
    keys = list(md)
    # the trial evidence follows the best set's figures and precedes the charts
    assert keys.index("best_strategy") < keys.index("dsr") < keys.index("equity_curve")
    assert keys[-3:] == [
        "sharpe_heatmap",
        "sharpe_heatmap_ma_crossover",
        "sharpe_heatmap_bollinger",
    ]
    for key in ("equity_curve", "sharpe_heatmap_ma_crossover", "sharpe_heatmap_bollinger"):
        assert isinstance(md[key], Markdown) and "data:image/png;base64," in md[key]
    best = report.best["best_family"]
    assert md["sharpe_heatmap"] == md[f"sharpe_heatmap_{best}"]
    assert all(not isinstance(v, float) or np.isfinite(v) for v in md.values())
