"""What `backtest_results` shows about a sweep, as plain metadata (no Dagster).

`sweep_metadata` decides the figures the UI shows for a `SweepReport`: its size, the backend
that ran it, the in/out-of-sample split, the reported best set and the equity and Sharpe
heatmap charts. The trial evidence (`trials.report`) is shown after the best set's figures.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qpipe_dagster.backtest.charts import equity_drawdown_png, png_markdown, sharpe_heatmap_png
from qpipe_dagster.backtest.results import SweepReport
from qpipe_dagster.metadata import Markdown, Plain, plain

SECONDS_PER_YEAR = 365 * 24 * 3600  # crypto trades every day; matches vectorbt's default year_freq
SINGLE_BAR_SECONDS = 3600.0  # one bar has no spacing to measure: read it as hourly


def periods_per_year(ts: np.ndarray) -> float:
    """Bars per year, from the median spacing of the bar timestamps."""
    if len(ts) < 2:
        return SECONDS_PER_YEAR / SINGLE_BAR_SECONDS
    bar_s = float(np.median(np.diff(ts).astype("timedelta64[s]").astype(np.float64)))
    return SECONDS_PER_YEAR / bar_s


def sweep_metadata(
    report: SweepReport,
    ts: np.ndarray,
    *,
    concept: str,
    direction: str,
    trials: Mapping[str, Plain] | None = None,
) -> dict[str, Plain]:
    """The sweep's metadata, in the order the UI lists it; ``trials`` (the trial evidence)
    goes after the best set's figures and before the charts."""
    first = report.runs[0]
    split_ts = ts[report.split_bar] if report.split_bar is not None else None
    assert report.equity is not None  # sweep() always draws the best set's curve
    equity_png = equity_drawdown_png(
        ts, report.equity, f"{report.best['best_strategy']} — {concept}", split_ts
    )
    charts: dict[str, Plain] = {}
    for family, (x, y, z, xl, yl) in report.heatmaps.items():
        png = sharpe_heatmap_png(x, y, z, f"{family}: in-sample Sharpe", xl, yl)
        charts[f"sharpe_heatmap_{family}"] = Markdown(png_markdown(png, f"{family} Sharpe heatmap"))
    seconds = float(sum(r.seconds for r in report.runs))
    return {
        "parameter_sets": report.table.num_rows,
        "bars": len(ts),
        "families": ", ".join(r.grid.family for r in report.runs),
        "direction": direction,
        "backend": first.backend,
        "device": first.device,
        "fallback_reason": first.fallback_reason or "none",
        "compute_seconds": seconds,
        "stage_seconds": round(seconds, 3),  # the sweep
        "split_bar": report.split_bar if report.split_bar is not None else -1,
        "split_ts": str(split_ts) if split_ts is not None else "none",
        **{k: plain(v) for k, v in report.best.items()},
        **(trials or {}),
        "equity_curve": Markdown(png_markdown(equity_png, "best set equity curve and drawdown")),
        "sharpe_heatmap": charts[f"sharpe_heatmap_{report.best['best_family']}"],
        **charts,
    }
