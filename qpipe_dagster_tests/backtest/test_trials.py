"""Top trials go into a real LanceDB store with real embeddings and are found by meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import bollinger_grid, ma_grid, rsi_grid
from qpipe_dagster.backtest.trials import describe_trial, top_trials, trial_concept, trial_objects
from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.store.base import open_store
from qpipe_dagster_tests.backtest.helpers import gbm_path

N = 1500
TS = np.datetime64("2024-01-01T00:00", "us") + np.arange(N).astype("timedelta64[h]")


@pytest.fixture(scope="module")
def table():
    grids = [
        ma_grid(range(2, 20, 3), range(20, 80, 10)),
        bollinger_grid([10, 20, 40], [1.5, 2.0, 2.5]),
        rsi_grid([7, 14], [20.0, 30.0], [70.0, 80.0]),
    ]
    return sweep_families(gbm_path(2, N), TS, grids, periods_per_year=8760).table


def test_top_trials_by_in_sample_sharpe(table) -> None:
    top = top_trials(table, 5)
    s = top.column("is_sharpe").to_numpy()
    assert top.num_rows == 5 and (np.diff(s) <= 0).all() and np.isfinite(s).all()
    text = describe_trial(top.to_pylist()[0], "demo", "BTC-USD")
    assert text.startswith("Backtest trial for concept 'demo' on BTC-USD:")
    assert "out-of-sample Sharpe" in text and "trades" in text
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        top_trials(table, 0)


def test_trials_upsert_and_search_in_a_real_store(table, tmp_path: Path) -> None:
    enc = Encoder()
    rsi_rows = table.filter(table.column("strategy").to_numpy(zero_copy_only=False) == "rsi")
    objs = trial_objects(table, "demo", top_n=12, encode=enc.encode, model=enc.model_id)
    objs_rsi = trial_objects(rsi_rows, "demo", top_n=2, encode=enc.encode, model=enc.model_id)
    store = open_store(model=enc.model_id, dim=enc.dim, lance_path=tmp_path / "vectors")
    try:
        first = store.upsert(objs)
        store.upsert(objs_rsi)
        again = store.upsert(objs)  # same trials again: ids are deterministic, nothing new
        assert again.inserted == 0 and again.updated + again.unchanged == objs.num_rows
        assert first.inserted == objs.num_rows
        query = enc.encode(["RSI oversold overbought threshold strategy backtest"])[0]
        hits = store.search(query, k=3, concept=trial_concept("demo"))
        assert hits and hits[0].title.startswith("rsi(")
        assert store.count(trial_concept("demo")) >= objs.num_rows
        assert store.count("demo") == 0  # page chunks of the concept are a separate key
    finally:
        store.close()
