"""An oversized sweep is refused with its count before it is built (a 200,000-window config
used to spend its time and memory building 2 * 10^10 pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from qpipe_dagster.backtest.grid import ma_crossover_grid
from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import StrategyGrid, bollinger_grid, ma_grid, rsi_grid
from qpipe_dagster_tests.backtest.helpers import gbm_path

WIDTHS = np.linspace(0.1, 5.0, 1000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ma_grid(range(1, 1416), range(1, 1416)), "ma_crossover grid has 1,000,405 "),
        (lambda: bollinger_grid(range(2, 1003), WIDTHS), "bollinger grid has 1,001,000 "),
        (
            lambda: rsi_grid(range(2, 403), range(0, 50), range(50, 100)),
            "rsi grid has 1,002,500 ",
        ),
        (lambda: ma_grid(range(1, 1_000_002), [2]), "ma_crossover: fast list has 1,000,001 values"),
        (
            lambda: ma_crossover_grid(range(1, 1416), range(1, 1416)),
            "MA-crossover grid has 1,000,405 ",
        ),
        (
            lambda: ma_crossover_grid([2], range(3, 1_000_004)),
            "slow window list has 1,000,001 values",
        ),
    ],
    ids=["ma", "bollinger", "rsi", "ma-axis", "bench-grid", "bench-axis"],
)
def test_grid_over_the_limit_is_refused_with_its_count(make, message: str) -> None:
    """These used to be built (a 200,000-window config never finished building)."""
    with pytest.raises(ValueError, match=message + ".*at most 1,000,000 parameter sets"):
        make()


def test_grids_up_to_the_limit_and_a_raised_limit_still_build() -> None:
    fast, _slow = ma_crossover_grid(range(1, 1415), range(1, 1415))
    assert fast.size == 1413 * 1414 // 2 <= 1_000_000
    fast, _slow = ma_crossover_grid(range(1, 1416), range(1, 1416), max_sets=2_000_000)
    assert fast.size == 1_000_405


def test_ma_crossover_grid_pairs_in_fast_major_order() -> None:
    """Built pair by pair now (no fast x slow mask): same pairs, same order as before."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        f = rng.integers(1, 40, rng.integers(1, 15)).tolist()
        s = rng.integers(1, 40, rng.integers(1, 15)).tolist()
        want = [(a, b) for a in sorted(set(f)) for b in sorted(set(s)) if a < b]
        if not want:
            with pytest.raises(ValueError, match="empty grid"):
                ma_crossover_grid(f, s)
            continue
        fast, slow = ma_crossover_grid(f, s)
        assert list(zip(fast.tolist(), slow.tolist(), strict=True)) == want


def test_sweep_of_families_over_the_limit_together_is_refused() -> None:
    """Each family under the limit, all of them in one table over it."""
    n = 600_000
    grids = [
        StrategyGrid("ma_crossover", {"fast": np.full(n, 2), "slow": np.full(n, 60)}),
        StrategyGrid("bollinger", {"window": np.full(n, 20), "width": np.full(n, 2.0)}),
    ]
    close = gbm_path(1, 50)
    ts = np.datetime64("2024-01-01", "us") + np.arange(50).astype("timedelta64[h]")
    with pytest.raises(
        ValueError, match=r"the sweep \(ma_crossover 600,000, bollinger 600,000\) has 1,200,000"
    ):
        sweep_families(close, ts, grids, periods_per_year=8760)
