"""The assets in-process: backtest_results' robust pick, evidence and warnings; the dry run;
strategy_recommendations' table and charts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from dagster import build_asset_context

from qpipe_dagster.defs.resources import EmbedderResource, VectorStoreResource
from qpipe_dagster.defs.trial_assets import strategy_recommendations
from qpipe_dagster.defs.validation import BacktestConfig, backtest_results
from qpipe_dagster.trials.store import TrialStore
from qpipe_dagster_tests.trials.conftest import N_BARS, TS, trend_close

SMALL = {"fast_min": 2, "fast_max": 30, "slow_min": 10, "slow_max": 200, "backend": "cpu",
         "trials_top_n": 0}  # fmt: skip


def _prices(close: np.ndarray) -> pa.Table:
    return pa.table({"ts": pa.array(TS, pa.timestamp("us", tz="UTC")), "close": close})


def _run(close: np.ndarray, tmp_path, **config: object) -> dict:
    ctx = build_asset_context(partition_key="demo")
    outputs = backtest_results(
        ctx,
        config=BacktestConfig(**{**SMALL, **config}),
        market_prices=_prices(close),
        embedder=EmbedderResource(),
        vector_store=VectorStoreResource(lance_path=str(tmp_path / "vectors")),
    )
    [out] = list(outputs)
    return {k: getattr(v, "value", v) for k, v in out.metadata.items()}


def test_trend_is_recommended_and_noise_is_flagged(dagster_home, tmp_path) -> None:
    md = _run(trend_close(0), tmp_path, families=["ma_crossover"], walk_forward_folds=3)
    assert md["recommend_status"] in ("ok", "degraded") and md["overfitting_warning"] == "none"
    assert md["dsr_sweep"] >= 0.95 and md["pbo"] < 0.5
    assert md["best_oos_total_return"] > 0 and md["trials_inserted"] == md["parameter_sets"]
    assert md["walk_forward_oos_return"] > 0 and "| fold |" in md["walk_forward_folds"]
    noise = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, N_BARS)))
    md = _run(noise, tmp_path, families=["ma_crossover", "bollinger"], bb_windows=[10, 20, 40])
    assert md["recommend_status"] != "ok" and md["overfitting_warning"] != "none"
    assert md["dsr_sweep"] < 0.95
    # same concept and symbol, new prices: the MA trials are updated, Bollinger's inserted
    assert md["trials_updated"] > 0 and md["trials_inserted"] > 0 and md["trials_archived"] == 0


def test_dry_run_writes_nothing(dagster_home, tmp_path) -> None:
    md = _run(trend_close(1), tmp_path, families=["ma_crossover"], trials_dry_run=True)
    assert md["trials_dry_run"] is True and md["trials_inserted"] == md["parameter_sets"]
    assert TrialStore().count() == 0


def test_strategy_recommendations_shows_table_and_charts(dagster_home, tmp_path) -> None:
    _run(trend_close(0), tmp_path, families=["ma_crossover", "bollinger"], bb_windows=[10, 20])
    result = strategy_recommendations(build_asset_context(partition_key="demo"))
    md = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert md["recommendations"].startswith("| family | status | label |")
    assert "ma_crossover(" in md["recommendations"]
    for key in ("dsr_vs_is_sharpe", "pbo_lambda_histogram"):
        assert "data:image/png;base64," in md[key]
    assert md["trials"] == md["trials_in_latest_sweep"] == md["trials_candidate"] > 0
    assert md["status_ma_crossover"] in ("ok", "degraded") and 0 <= md["pbo"] <= 1


def test_strategy_recommendations_without_trials_fails_once_naming_the_fix(dagster_home) -> None:
    import pytest
    from dagster import Failure

    with pytest.raises(Failure, match="materialize backtest_results") as info:
        strategy_recommendations(build_asset_context(partition_key="demo"))
    assert info.value.allow_retries is False  # bad state, not a transient error: no retry
