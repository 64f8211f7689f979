"""All families swept with an IS/OOS split into one table; the asset's output and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dagster import Failure, build_asset_context

from qpipe_dagster.backtest.reference import vectorbt_sweep
from qpipe_dagster.backtest.results import split_index, sweep_families
from qpipe_dagster.backtest.strategies import StrategyGrid, bollinger_grid, ma_grid, rsi_grid
from qpipe_dagster.defs.resources import EmbedderResource, VectorStoreResource
from qpipe_dagster.defs.validation import BacktestConfig, backtest_results
from qpipe_dagster.market.prices import load_prices
from qpipe_dagster_tests.backtest.helpers import assert_metrics_match, gbm_path

DEMO = Path(__file__).resolve().parents[2] / "qpipe_dagster" / "demo" / "prices" / "BTC-USD.csv"
N = 1200
CLOSE = gbm_path(9, N)
TS = np.datetime64("2024-01-01T00:00", "us") + np.arange(N).astype("timedelta64[h]")
GRIDS = [
    ma_grid(range(2, 20, 4), range(20, 80, 15)),
    bollinger_grid([10, 20, 40], [1.5, 2.0]),
    rsi_grid([7, 14], [25.0, 30.0], [70.0, 75.0]),
]


def test_table_carries_whole_is_and_oos_metrics_matching_vectorbt() -> None:
    rep = sweep_families(CLOSE, TS, GRIDS, split_fraction=0.6, periods_per_year=8760)
    t = rep.table
    assert t.num_rows == sum(g.size for g in GRIDS) and rep.split_bar == 720
    for prefix in ("", "is_", "oos_"):
        for key in ("total_return", "sharpe", "sortino", "max_drawdown", "win_rate", "exposure"):
            assert t.schema.field(prefix + key).type == pa.float64()
        assert t.schema.field(prefix + "trade_count").type == pa.int64()
    assert set(t.column("strategy").to_pylist()) == {"ma_crossover", "bollinger", "rsi"}
    assert set(t.column("backend").to_pylist()) <= {"cpu", "gpu"}
    # the OOS rows of the Bollinger family are vectorbt's numbers on bars 720..1200
    rows = t.filter(pa.compute.equal(t.column("strategy"), "bollinger"))
    ref = vectorbt_sweep(CLOSE, GRIDS[1], periods_per_year=8760, start=720)
    ours = {k: rows.column("oos_" + k).to_numpy() for k in ref}
    assert_metrics_match(ours, ref)
    assert rows.column("fast").null_count == rows.num_rows  # not a Bollinger parameter


def test_best_set_is_chosen_in_sample_and_reported_out_of_sample() -> None:
    rep = sweep_families(CLOSE, TS, GRIDS, split_fraction=0.6, periods_per_year=8760)
    t = rep.table
    traded = np.asarray(t.column("is_trade_count")) > 0
    is_sharpe = np.where(traded, np.asarray(t.column("is_sharpe")), -np.inf)
    is_sharpe[~np.isfinite(is_sharpe)] = -np.inf
    k = int(np.argmax(is_sharpe))
    assert rep.best["best_strategy"] == t.column("label")[k].as_py()
    assert rep.best["best_is_sharpe"] == pytest.approx(t.column("is_sharpe")[k].as_py())
    assert rep.best["best_oos_sharpe"] == pytest.approx(t.column("oos_sharpe")[k].as_py())
    gap = rep.best["best_is_sharpe"] - rep.best["best_oos_sharpe"]
    assert rep.best["best_is_oos_sharpe_gap"] == pytest.approx(gap)
    assert rep.equity is not None and rep.equity.shape == (N,)


def test_split_by_date_and_no_split() -> None:
    assert split_index(TS, 0.5, "2024-01-11") == 240  # a date wins over the fraction
    rep = sweep_families(CLOSE, TS, GRIDS[:1], split_fraction=None, periods_per_year=8760)
    assert rep.split_bar is None and "is_sharpe" not in rep.table.column_names
    assert "best_oos_sharpe" not in rep.best


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split_date": "yesterday"}, "split_date 'yesterday' is not an ISO date"),
        ({"split_date": "2030-01-01"}, "outside the price range"),
        ({"split_fraction": 0.01}, "not more than the largest window"),
        ({"grids": []}, "no strategy family selected"),
        ({"grids": [ma_grid([5], [2000])]}, "too few bars: slow window 2000"),
        ({"close": np.where(np.arange(N) == 3, np.nan, CLOSE)}, "NaN/inf price.*bar 3"),
        ({"direction": "sideways"}, "direction must be one of"),
        ({"fees": 2.0}, "fees must be a fraction"),
        ({"split_fraction": float("nan")}, r"split_fraction must be in \(0, 1\), got nan"),
        ({"split_fraction": 1.5}, r"split_fraction must be in \(0, 1\), got 1.5"),
        ({"split_date": "2024-01-11", "ts": TS[::-1]}, "needs timestamps sorted ascending"),
        ({"init_cash": True}, "init_cash must be a positive number, got True"),
        ({"slippage": False}, "slippage must be a fraction in .* got False"),
    ],
)
def test_bad_sweep_setup_is_named_before_compute(kwargs: dict, message: str) -> None:
    args = {"close": CLOSE, "ts": TS, "grids": GRIDS, "periods_per_year": 8760, **kwargs}
    with pytest.raises(ValueError, match=message):
        sweep_families(**args)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: bollinger_grid([1], [2.0]), "bollinger: window must be >= 2"),
        (lambda: bollinger_grid([10], [0.0]), "bollinger: width must be > 0"),
        (lambda: rsi_grid([14], [70.0], [30.0]), "rsi: empty grid, no low < high"),
        (lambda: rsi_grid([14], [-5.0], [30.0]), r"rsi: thresholds must lie in \[0, 100\]"),
        (lambda: rsi_grid([], [20.0], [80.0]), "rsi: window list is empty"),
        (lambda: ma_grid([30], [10]), "ma_crossover: empty grid"),
        (lambda: ma_grid([None, 5], [10]), "ma_crossover: fast must be a flat list of numbers"),
        (lambda: rsi_grid([14], ["30"], [70.0]), "rsi: low must be a flat list of numbers"),
        (lambda: ma_grid([5, float("nan")], [10, 20]), r"ma_crossover: fast must be finite"),
        (lambda: rsi_grid([14], [30.0], [70.0, float("nan")]), "rsi: high must be finite"),
        (
            lambda: StrategyGrid("ma_crossover", {"fast": [np.inf], "slow": [10]}),
            "ma_crossover: fast inf is too large for a window",
        ),
        (
            lambda: StrategyGrid(
                "rsi", {"window": np.array([2**63 + 5], np.uint64), "low": [30.0], "high": [70.0]}
            ),
            "rsi: window 9223372036854775813 is too large for a window",
        ),
    ],
)
def test_bad_grids_are_named(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_scalar_costs_are_numbers() -> None:
    """np.float32/np.int64 costs (e.g. computed with NumPy) run like the Python numbers."""
    grid = [ma_grid([5], [20])]
    kw = {"split_fraction": None, "periods_per_year": 8760}
    plain = sweep_families(CLOSE, TS, grid, fees=0.0, init_cash=10_000.0, **kw)
    numpy = sweep_families(CLOSE, TS, grid, fees=np.float32(0.0), init_cash=np.int64(10_000), **kw)
    assert numpy.best == plain.best


def _run_asset(config: BacktestConfig, store_dir: Path) -> dict:
    table = load_prices(DEMO).frame.to_arrow()
    ctx = build_asset_context(partition_key="demo")
    store = VectorStoreResource(lance_path=str(store_dir))
    outputs = backtest_results(
        ctx, config=config, market_prices=table, embedder=EmbedderResource(), vector_store=store
    )
    [out] = list(outputs)
    return {"table": out.value, **{k: getattr(v, "value", v) for k, v in out.metadata.items()}}


def test_asset_sweeps_all_families_on_demo_prices(tmp_path: Path, dagster_home: Path) -> None:
    md = _run_asset(BacktestConfig(), tmp_path)
    assert md["parameter_sets"] == md["table"].num_rows > 1000
    assert md["families"] == "ma_crossover, bollinger, rsi"
    assert md["backend"] in ("cpu", "gpu") and md["device"]
    assert md["split_bar"] == 2800 and md["split_ts"] != "none"
    for key in ("equity_curve", "sharpe_heatmap", "sharpe_heatmap_rsi", "sharpe_heatmap_bollinger"):
        assert "data:image/png;base64," in md[key]
    assert md["top_results"].startswith("| label | is_sharpe | oos_sharpe |")
    # the identity holds to rounding: a - (a - b) == b exactly only when a and b are close
    gap = md["best_is_sharpe"] - md["best_is_oos_sharpe_gap"]
    assert md["best_oos_sharpe"] == pytest.approx(gap, rel=1e-12, abs=1e-12)
    assert md["ranking"].startswith("robust") and 0 <= md["pbo"] <= 1
    assert md["trials_inserted"] == md["parameter_sets"] and md["trials_error"] == 0
    assert md["trials_stored"] == 20


def test_asset_config_selects_families_and_direction(tmp_path: Path, dagster_home: Path) -> None:
    md = _run_asset(
        BacktestConfig(families=["rsi"], direction="longshort", split_date="2026-01-01"), tmp_path
    )
    t = md["table"]
    assert set(t.column("strategy").to_pylist()) == {"rsi"}
    assert set(t.column("direction").to_pylist()) == {"longshort"}
    assert md["best_family"] == "rsi" and md["sharpe_heatmap"] == md["sharpe_heatmap_rsi"]
    # transient_only (4b10680): bad config fails once as a Failure that keeps the message
    with pytest.raises(Failure, match=r"unknown strategy families \['macd'\]") as info:
        _run_asset(BacktestConfig(families=["macd"]), tmp_path)
    assert info.value.allow_retries is False
