"""Small seeded sweeps shared by the trial-store, recommend and CLI tests."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import bollinger_grid, ma_grid

N_BARS = 2000
TS = np.datetime64("2024-01-01T00:00", "us") + np.arange(N_BARS).astype("timedelta64[h]")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def trend_close(seed: int = 0, n: int = N_BARS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sign = np.where((np.arange(n) // 250) % 2 == 0, 1.0, -1.0)
    return 100 * np.exp(np.cumsum(0.003 * sign + rng.normal(0, 0.01, n)))


def grids(fast_max: int = 30) -> list:
    return [
        ma_grid(range(2, fast_max, 4), range(10, 200, 20)),
        bollinger_grid([10, 20, 40], [1.5, 2.0]),
    ]


def make_run(
    concept: str = "demo",
    *,
    fast_max: int = 30,
    fees: float = 0.001,
    seed: int = 0,
    run_id: str | None = None,
    message_id: str | None = None,
):
    from qpipe_dagster.trials.pipeline import evaluate_and_rank

    close = trend_close(seed)
    report = sweep_families(
        close, TS, grids(fast_max), periods_per_year=8760, fees=fees, backend="cpu"
    )
    return evaluate_and_rank(
        report,
        close,
        TS,
        concept=concept,
        symbol="BTC-USD",
        periods_per_year=8760,
        fees=fees,
        now=NOW,
        run_id=run_id,
        message_id=message_id,
    )


@pytest.fixture(scope="session")
def trial_run():
    return make_run()
