"""Validation path: market_prices -> backtest_results, partitioned by concept.

backtest_results is the compute-heavy validator: it carries the `qpipe/compute=gpu` tag (on the
asset and on its op) so the run launcher can send its runs to GPU machines.
"""


import numpy as np
import polars as pl
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

from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.resources import ConceptRegistryResource, PriceSourceResource

GROUP = "validation"
OWNERS = ["team:validation"]
GPU_TAGS = {"qpipe/compute": "gpu"}
SECONDS_PER_YEAR = 365 * 24 * 3600  # crypto trades every day; matches vectorbt's default year_freq


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"polars", "arrow"},
    owners=OWNERS,
    check_specs=[AssetCheckSpec("prices_monotonic", asset="market_prices")],
    description="OHLCV bars for the concept's market symbol: columns validated, timestamps "
    "sorted and de-duplicated, gaps reported.",
)
def market_prices(
    context: AssetExecutionContext,
    concepts: ConceptRegistryResource,
    prices: PriceSourceResource,
):
    from qpipe_dagster.market.prices import find_price_file, load_prices

    concept = concepts.get(context.partition_key)
    symbol = concept.symbol or prices.default_symbol
    path = find_price_file(symbol, prices.prices_dir)
    data = load_prices(path)
    table = data.frame.to_arrow()
    ts = data.frame["ts"]
    monotonic = bool(ts.is_sorted() and ts.n_unique() == ts.len())
    yield Output(
        table,
        metadata={
            "symbol": symbol,
            "source": MetadataValue.path(str(path)),
            **{k: _plain(v) for k, v in data.report.items() if k != "source"},
        },
    )
    yield AssetCheckResult(
        check_name="prices_monotonic",
        passed=monotonic,
        metadata={"rows": table.num_rows},
        description="timestamps strictly increasing",
    )


def _plain(value: object) -> object:
    """Dagster metadata takes str/int/float/bool; render anything else as text."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value if value is not None else "none"
    return str(value)


class BacktestConfig(Config):
    """Moving-average crossover sweep: every (fast, slow) pair with fast < slow."""

    fast_min: int = Field(default=2, ge=1)
    fast_max: int = Field(default=50, ge=1)
    slow_min: int = Field(default=5, ge=2)
    slow_max: int = Field(default=100, ge=2)
    fees: float = Field(default=0.001, ge=0, description="fraction per trade, e.g. 0.001 = 10 bp")
    slippage: float = Field(default=0.0, ge=0)
    init_cash: float = Field(default=10_000.0, gt=0)
    backend: str = Field(default="auto", description="auto, cpu, gpu or vectorbt")
    preview_rows: int = Field(default=10, ge=1)


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"vectorbt", "numba"},
    owners=OWNERS,
    tags=GPU_TAGS,
    op_tags=GPU_TAGS,
    description="Moving-average crossover sweep over the concept's prices: total return, "
    "Sharpe, max drawdown and trades per parameter set, with the best set's equity curve.",
)
def backtest_results(
    context: AssetExecutionContext, config: BacktestConfig, market_prices: pa.Table
):
    from qpipe_dagster.backtest.charts import equity_drawdown_png, png_markdown, sharpe_heatmap_png
    from qpipe_dagster.backtest.engine import run_ma_sweep
    from qpipe_dagster.backtest.grid import ma_crossover_grid
    from qpipe_dagster.backtest.kernels import ma_crossover_equity

    close = market_prices.column("close").to_numpy()
    ts = market_prices.column("ts").to_numpy()
    bar_s = float(np.median(np.diff(ts).astype("timedelta64[s]").astype(np.float64))) if len(ts) > 1 else 3600.0
    params = {
        "fees": config.fees,
        "slippage": config.slippage,
        "init_cash": config.init_cash,
        "periods_per_year": SECONDS_PER_YEAR / bar_s,
    }
    fast, slow = ma_crossover_grid(
        range(config.fast_min, config.fast_max + 1), range(config.slow_min, config.slow_max + 1)
    )
    run = run_ma_sweep(close, fast, slow, backend=config.backend, **params)
    m = run.metrics
    table = pa.table(
        {
            "strategy": pa.array(["ma_crossover"] * len(fast)),
            "fast": pa.array(fast, pa.int32()),
            "slow": pa.array(slow, pa.int32()),
            **{k: pa.array(np.asarray(v, dtype=np.float64)) for k, v in m.items() if k != "trade_count"},
            "trade_count": pa.array(np.asarray(m["trade_count"], dtype=np.int64)),
            "backend": pa.array([run.backend] * len(fast)),
            "device": pa.array([run.device] * len(fast)),
            "compute_seconds": pa.array([run.seconds] * len(fast)),
        }
    )
    sharpe = np.nan_to_num(np.asarray(m["sharpe"], dtype=np.float64), nan=-np.inf)
    best = int(np.argmax(sharpe))
    best_fast, best_slow = int(fast[best]), int(slow[best])
    equity = ma_crossover_equity(close, best_fast, best_slow, **params)
    equity_png = equity_drawdown_png(ts, equity, f"MA {best_fast}/{best_slow} — {context.partition_key}")
    heatmap_png = sharpe_heatmap_png(fast, slow, np.asarray(m["sharpe"]), "Sharpe by window pair")
    top = pl.from_arrow(table).sort("sharpe", descending=True, nulls_last=True).head(config.preview_rows)
    preview = top.select(["fast", "slow", "total_return", "sharpe", "max_drawdown", "trade_count"])
    yield Output(
        table,
        metadata={
            "parameter_sets": len(fast),
            "bars": len(close),
            "backend": run.backend,
            "device": run.device,
            "fallback_reason": run.fallback_reason or "none",
            "compute_seconds": float(run.seconds),
            "best_fast": best_fast,
            "best_slow": best_slow,
            "best_sharpe": float(m["sharpe"][best]),
            "best_total_return": float(m["total_return"][best]),
            "top_results": MetadataValue.md(_markdown_table(preview)),
            "equity_curve": MetadataValue.md(png_markdown(equity_png, "best equity curve and drawdown")),
            "sharpe_heatmap": MetadataValue.md(png_markdown(heatmap_png, "Sharpe heatmap")),
        },
    )


def _markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join(
        "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
        for row in frame.iter_rows()
    )
    return header + body
