"""Compile every numba kernel a concept run uses, so its on-disk cache is full before a run.

Numba caches compiled kernels (`cache=True`) under NUMBA_CACHE_DIR, else next to the source. A
new host, container or code checkout otherwise compiles them inside its first backtest step:
measured at minutes on a busy 2-core machine, against well under a second for the sweep itself.
The image build runs `python -m qpipe_dagster.backtest.warm`; `make install` runs it too.
A cache written on one CPU model is recompiled (not wrong) on another.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import bollinger_grid, ma_grid, rsi_grid
from qpipe_dagster.trials.pipeline import evaluate_and_rank

BARS = 600
PERIODS_PER_YEAR = 8760.0


def warm(bars: int = BARS) -> float:
    """Run each strategy family in both directions, and the trial evidence, on a short
    synthetic series; the seconds it took (mostly compilation on a cold cache)."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, bars)))
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(bars) * np.timedelta64(1, "h")
    grids = [ma_grid(range(2, 6), range(8, 12)), bollinger_grid([10, 20], [1.5, 2.0]),
             rsi_grid([7, 14], [25.0, 30.0], [70.0, 75.0])]  # fmt: skip
    for direction in ("longonly", "longshort"):
        report = sweep_families(
            close, ts, grids, backend="cpu", periods_per_year=PERIODS_PER_YEAR,
            direction=direction,
        )  # fmt: skip
        evaluate_and_rank(
            report, close, ts, concept="warm-up", symbol="BTC-USD",
            periods_per_year=PERIODS_PER_YEAR, direction=direction,
        )  # fmt: skip
    return time.perf_counter() - started


def main() -> int:
    seconds = warm()
    print(f"numba kernels compiled and cached in {seconds:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
