"""The real CLIs end to end: `dagster asset materialize` of market_prices, backtest_results and
strategy_recommendations on a generated price file (temporary DAGSTER_HOME), then
`qpipe recommend --json` reads what the run stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from qpipe_dagster.backtest.strategies import ma_grid
from qpipe_dagster_tests.trials.conftest import trend_close

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "ops": {
        "backtest_results": {
            "config": {
                "families": ["ma_crossover", "bollinger"],
                "fast_min": 2, "fast_max": 30, "slow_min": 10, "slow_max": 200,
                "bb_windows": [10, 20, 40], "bb_widths": [1.5, 2.0],
                "backend": "cpu", "trials_top_n": 0, "walk_forward_folds": 3,
            }
        }
    }
}  # fmt: skip


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_materialize_then_recommend(tmp_path: Path) -> None:
    prices = tmp_path / "prices"
    prices.mkdir()
    n = 2000
    close = trend_close(0, n)
    ts = np.datetime64("2024-01-01T00:00", "s") + np.arange(n).astype("timedelta64[h]")
    pl.DataFrame({
        "datetime": [str(t) + "+00:00" for t in ts], "open": close, "high": close * 1.001,
        "low": close * 0.999, "close": close, "volume": np.full(n, 10.0),
    }).write_csv(prices / "SYN-USD.csv")  # fmt: skip
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "QPIPE_PRICES_DIR": str(prices),
           "QPIPE_ACTOR": "e2e"}  # fmt: skip
    for var in ("WEAVIATE_URL", "QPIPE_BACKEND"):
        env.pop(var, None)
    (tmp_path / "home").mkdir()
    done = _run(
        [str(BIN / "qpipe"), "concepts", "add", "Planted trend", "--symbol", "SYN-USD"], env
    )
    assert done.returncode == 0, done.stderr
    empty = _run([str(BIN / "qpipe"), "recommend", "--family", "ma_crossover", "--objective",
                  "sharpe", "--json"], env)  # fmt: skip
    assert empty.returncode == 1 and "empty" in json.loads(empty.stdout)["reasons"][0]
    done = _run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "qpipe_dagster.definitions",
         "--select", "market_prices,backtest_results,strategy_recommendations",
         "--partition", "planted-trend", "--config-json", json.dumps(CONFIG)],
        env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "RUN_SUCCESS" in done.stderr or "RUN_SUCCESS" in done.stdout
    rec = _run([str(BIN / "qpipe"), "recommend", "--family", "ma_crossover", "--objective",
                "sharpe", "--concept", "planted-trend", "--json", "--debug"], env)  # fmt: skip
    body = json.loads(rec.stdout)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert body["status"] in ("ok", "degraded") and body["recommendations"]
    top = body["recommendations"][0]
    assert top["family"] == "ma_crossover" and top["symbol"] == "SYN-USD"
    assert top["dsr"] >= 0.95 and top["oos"]["total_return"] > 0 and top["params"]["slow"] < 250
    assert "filter_rejections" in body
    listed = _run([str(BIN / "qpipe"), "trials", "list", "--concept", "planted-trend", "--json",
                   "--limit", "100000"], env)  # fmt: skip
    sets = ma_grid(range(2, 31), range(10, 201)).size + 6  # every MA pair + 6 Bollinger sets
    assert len(json.loads(listed.stdout)) == sets
