"""The backtest_results run config, through a real Dagster run: a bad value is named by the
config field that holds it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from qpipe_dagster.concepts import Concept, default_registry
from qpipe_dagster.defs.io import ArrowIPCIOManager
from qpipe_dagster.defs.resources import (
    ConceptRegistryResource,
    EmbedderResource,
    PriceSourceResource,
    VectorStoreResource,
)
from qpipe_dagster.defs.validation import backtest_results, market_prices
from qpipe_dagster_tests.backtest.helpers import gbm_path


def _hourly_csv(folder: Path, bars: int) -> None:
    folder.mkdir()
    close = gbm_path(5, bars)
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(bars).astype("timedelta64[h]")
    lines = [f"{t}Z,{c},{c},{c},{c},1" for t, c in zip(stamps, close, strict=True)]
    (folder / "TEST-USD.csv").write_text("ts,open,high,low,close,volume\n" + "\n".join(lines))


def _run_error(tmp_path: Path, config: dict, bars: int = 1000) -> str:
    """Materialise market_prices + backtest_results; the failure's messages, outermost first."""
    _hourly_csv(tmp_path / "prices", bars)
    default_registry().upsert(Concept.create("cfg", symbol="TEST-USD"))
    resources = {
        "concepts": ConceptRegistryResource(),
        "prices": PriceSourceResource(prices_dir=str(tmp_path / "prices")),
        "embedder": EmbedderResource(),
        "vector_store": VectorStoreResource(lance_path=str(tmp_path / "lance")),
        "io_manager": ArrowIPCIOManager(base_dir=str(tmp_path / "assets")),
    }
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["cfg"])
        result = materialize(
            [market_prices, backtest_results],
            partition_key="cfg",
            instance=instance,
            resources=resources,
            run_config={"ops": {"backtest_results": {"config": {"trials_top_n": 0, **config}}}},
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "backtest_results"
    error, messages = failure.event_specific_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"families": ["ma_crossover"], "fast_min": 10, "fast_max": 5},
            "backtest config: fast_min 10 is greater than fast_max 5",
        ),
        (
            {"families": ["ma_crossover"], "slow_min": 40, "slow_max": 30},
            "backtest config: slow_min 40 is greater than slow_max 30",
        ),
        (
            {"families": ["ma_crossover"], "fast_max": 1500, "slow_min": 2, "slow_max": 1500},
            r"backtest config \(fast_min\.\.fast_max, slow_min\.\.slow_max\): "
            "ma_crossover grid has 1,122,751 parameter sets; a sweep may have at most",
        ),
        (
            {"families": ["bollinger"], "bb_widths": [2.0, float("nan")]},
            r"backtest config \(bb_windows, bb_widths\): bollinger: width must be finite",
        ),
        (
            {"families": ["rsi"], "rsi_lows": [], "rsi_highs": [70.0]},
            r"backtest config \(rsi_windows, rsi_lows, rsi_highs\): rsi: low list is empty",
        ),
        ({"split_date": "NaT"}, "split_date 'NaT' is not an ISO date/time"),
    ],
    ids=["fast-min-max", "slow-min-max", "grid-too-large", "nan-width", "empty-lows", "nat-date"],
)
def test_bad_backtest_config_is_named_by_its_field(
    dagster_home: Path, tmp_path: Path, config: dict, message: str
) -> None:
    """On 1,000 bars the oversized grid used to be built, then refused as 'too few bars'."""
    text = _run_error(tmp_path, config)
    assert re.search(message, text), text
