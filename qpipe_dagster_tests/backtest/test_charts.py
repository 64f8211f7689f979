"""Charts are real, small PNGs and embed as markdown data URIs."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from qpipe_dagster.backtest.charts import equity_drawdown_png, png_markdown, sharpe_heatmap_png
from qpipe_dagster.backtest.grid import ma_crossover_grid
from qpipe_dagster.backtest.strategies import ma_crossover_equity, ma_crossover_sweep
from qpipe_dagster_tests.backtest.helpers import gbm_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_equity_and_heatmap_pngs_are_small_and_valid() -> None:
    close = gbm_path(2, 2000)
    ts = np.datetime64("2024-01-01T00:00") + np.arange(2000).astype("timedelta64[h]")
    equity = ma_crossover_equity(close, 5, 30)
    png = equity_drawdown_png(ts, equity, "BTC-USD SMA 5/30")
    assert png.startswith(PNG_MAGIC) and 2_000 < len(png) < 150_000
    fast, slow = ma_crossover_grid(range(2, 30), range(5, 60))
    sharpe = ma_crossover_sweep(close, fast, slow, periods_per_year=8760)["sharpe"]
    heat = sharpe_heatmap_png(fast, slow, sharpe, "Sharpe by window")
    assert heat.startswith(PNG_MAGIC) and 2_000 < len(heat) < 150_000
    md = png_markdown(heat, "Sharpe [heatmap]")
    assert md.startswith("![Sharpe (heatmap)](data:image/png;base64,")
    assert base64.b64decode(md.split(",", 1)[1].rstrip(")")) == heat


def test_chart_input_errors_are_named() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        equity_drawdown_png(np.arange(3), np.ones(4), "x")
    with pytest.raises(ValueError, match="NaN/inf"):
        equity_drawdown_png(np.arange(2), np.array([1.0, np.nan]), "x")
    with pytest.raises(ValueError, match="equal-length"):
        sharpe_heatmap_png(np.array([1]), np.array([2, 3]), np.array([0.1]), "x")
    with pytest.raises(ValueError, match="expects PNG"):
        png_markdown(b"GIF89a", "x")
