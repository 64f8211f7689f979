"""Validation path: market_prices -> backtest_results, partitioned by concept.

backtest_results is the compute-heavy validator: it carries the `qpipe/compute=gpu` tag (on the
asset and on its op) so the run launcher (`qpipe_dagster.launcher.gpu_router`) can send its
runs to GPU machines, and sits in the `gpu` concurrency pool so only one sweep runs at a time.
"""

import time

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from qpipe_dagster.defs.metadata import dagster_metadata
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.resources import (
    ConceptRegistryResource,
    EmbedderResource,
    PriceSourceResource,
    VectorStoreResource,
)
from qpipe_dagster.defs.retries import transient_only
from qpipe_dagster.defs.trial_assets import (  # strategy_recommendations: loaded from here
    record_trials,
    strategy_recommendations,  # noqa: F401
)
from qpipe_dagster.metadata import plain

GROUP = "validation"
OWNERS = ["team:validation"]
GPU_TAGS = {"qpipe/compute": "gpu"}
GPU_POOL = "gpu"  # concurrency pool: dagster.yaml limits GPU sweeps to one at a time


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"polars", "arrow"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "prices_monotonic",
            asset="market_prices",
            description="bar timestamps are strictly increasing (sorted, no duplicates)",
        )
    ],
    description="OHLCV bars for the concept's market symbol: columns validated, timestamps "
    "sorted and de-duplicated, gaps reported.",
)
@transient_only
def market_prices(
    context: AssetExecutionContext,
    concepts: ConceptRegistryResource,
    prices: PriceSourceResource,
):
    from qpipe_dagster.market.prices import find_price_file, load_prices

    concept = concepts.get(context.partition_key)
    symbol = concept.symbol or prices.default_symbol
    path = find_price_file(symbol, prices.prices_dir)
    started = time.perf_counter()
    data = load_prices(path)
    table = data.frame.to_arrow()
    stage_seconds = time.perf_counter() - started
    ts = data.frame["ts"]
    monotonic = bool(ts.is_sorted() and ts.n_unique() == ts.len())
    yield Output(
        table,
        metadata={
            "stage_seconds": round(stage_seconds, 3),
            "symbol": symbol,
            "source": MetadataValue.path(str(path)),
            **{k: plain(v) for k, v in data.report.items() if k != "source"},
        },
    )
    yield AssetCheckResult(
        check_name="prices_monotonic",
        passed=monotonic,
        metadata={"rows": table.num_rows},
        description="timestamps strictly increasing",
    )


class BacktestConfig(Config):
    """Which strategy families to sweep, their grids, costs and the in/out-of-sample split."""

    families: list[str] = Field(
        default=["ma_crossover", "bollinger", "rsi"],
        description="any of ma_crossover, bollinger, rsi",
    )
    direction: str = Field(default="longonly", description="longonly or longshort")
    fast_min: int = Field(default=2, ge=1)
    fast_max: int = Field(default=50, ge=1)
    slow_min: int = Field(default=5, ge=2)
    slow_max: int = Field(default=100, ge=2)
    bb_windows: list[int] = Field(default=list(range(10, 101, 5)))
    bb_widths: list[float] = Field(default=[1.0, 1.5, 2.0, 2.5, 3.0])
    rsi_windows: list[int] = Field(default=[7, 10, 14, 21, 28])
    rsi_lows: list[float] = Field(default=[15.0, 20.0, 25.0, 30.0, 35.0, 40.0])
    rsi_highs: list[float] = Field(default=[60.0, 65.0, 70.0, 75.0, 80.0, 85.0])
    is_fraction: float = Field(default=0.7, gt=0, lt=1, description="in-sample share of bars")
    split_date: str | None = Field(
        default=None, description="ISO date where out-of-sample starts (overrides is_fraction)"
    )
    fees: float = Field(default=0.001, ge=0, description="fraction per trade, e.g. 0.001 = 10 bp")
    slippage: float = Field(default=0.0, ge=0)
    init_cash: float = Field(default=10_000.0, gt=0)
    backend: str = Field(default="auto", description="auto, cpu, gpu or vectorbt")
    preview_rows: int = Field(default=10, ge=1)
    trials_top_n: int = Field(
        default=20, ge=0, description="best sets stored as searchable trial objects (0 = none)"
    )
    pbo_blocks: int = Field(
        default=16, ge=2, description="CSCV blocks for the PBO (even; fewer when bars are few)"
    )
    walk_forward_folds: int = Field(
        default=0, ge=0, description="rolling in/out-of-sample folds to report (0 = off)"
    )
    trials_dry_run: bool = Field(
        default=False, description="count what ingesting the trials would change, write nothing"
    )


def _grids(config: BacktestConfig) -> list:
    """One grid per selected family; a bad value is reported under the config fields that
    hold it (``fast_min 10 is greater than fast_max 5``, not ``fast list is empty``)."""
    from qpipe_dagster.backtest.strategies import bollinger_grid, ma_grid, rsi_grid

    unknown = sorted(set(config.families) - {"ma_crossover", "bollinger", "rsi"})
    if unknown:
        raise ValueError(f"unknown strategy families {unknown}; use ma_crossover, bollinger, rsi")
    makers = {
        "ma_crossover": (
            "fast_min..fast_max, slow_min..slow_max",
            lambda: ma_grid(
                range(config.fast_min, config.fast_max + 1),
                range(config.slow_min, config.slow_max + 1),
            ),
        ),
        "bollinger": (
            "bb_windows, bb_widths",
            lambda: bollinger_grid(config.bb_windows, config.bb_widths),
        ),
        "rsi": (
            "rsi_windows, rsi_lows, rsi_highs",
            lambda: rsi_grid(config.rsi_windows, config.rsi_lows, config.rsi_highs),
        ),
    }
    grids = []
    for family in dict.fromkeys(config.families):
        fields, make = makers[family]
        if family == "ma_crossover":
            for lo, hi in (("fast_min", "fast_max"), ("slow_min", "slow_max")):
                if getattr(config, lo) > getattr(config, hi):
                    raise ValueError(
                        f"backtest config: {lo} {getattr(config, lo)} is greater than "
                        f"{hi} {getattr(config, hi)}"
                    )
        try:
            grids.append(make())
        except ValueError as exc:
            raise ValueError(f"backtest config ({fields}): {exc}") from exc
    return grids


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"vectorbt", "numba"},
    owners=OWNERS,
    tags=GPU_TAGS,
    op_tags=GPU_TAGS,
    pool=GPU_POOL,
    description="Strategy sweeps (MA crossover, Bollinger reversal, RSI threshold) over the "
    "concept's prices with an in-sample/out-of-sample split: return, Sharpe, Sortino, "
    "drawdown, win rate, trades and exposure per parameter set; every set is stored as a trial "
    "with its DSR and PBO, and the best set is chosen by the robust ranking of `qpipe "
    "recommend` (not the in-sample argmax) and reported out of sample.",
)
@transient_only
def backtest_results(
    context: AssetExecutionContext,
    config: BacktestConfig,
    market_prices: pa.Table,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
):
    # heavy (numba kernels, matplotlib): loaded when a sweep runs, not with the code location
    from qpipe_dagster.backtest.results import sweep_families
    from qpipe_dagster.backtest.summary import periods_per_year, sweep_metadata

    close = market_prices.column("close").to_numpy()
    ts = market_prices.column("ts").to_numpy()
    per_year = periods_per_year(ts)
    report = sweep_families(
        close,
        ts,
        _grids(config),
        split_fraction=config.is_fraction,
        split_date=config.split_date,
        backend=config.backend,
        fees=config.fees,
        slippage=config.slippage,
        init_cash=config.init_cash,
        periods_per_year=per_year,
        direction=config.direction,
    )
    trial_md = record_trials(
        context, config, report, close, ts, per_year, embedder, vector_store
    )  # replaces report.best with the robust pick
    metadata = sweep_metadata(
        report, ts, concept=context.partition_key, direction=config.direction, trials=trial_md
    )
    yield Output(report.table, metadata=dagster_metadata(metadata))
