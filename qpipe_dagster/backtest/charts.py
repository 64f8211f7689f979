"""Small PNG charts for Dagster metadata (``MetadataValue.md`` renders a data-URI image)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: assets run in worker processes without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

DPI = 80


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def equity_drawdown_png(
    ts: np.ndarray, equity: np.ndarray, title: str, split_at: object | None = None
) -> bytes:
    """Equity curve over a drawdown panel (drawdown in % below the running peak).

    ``split_at`` (a timestamp) draws the in-sample / out-of-sample boundary on both panels.
    """
    equity = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts)
    if equity.ndim != 1 or equity.size == 0:
        raise ValueError(f"equity must be a non-empty 1-D array, got shape {equity.shape}")
    if ts.shape != equity.shape:
        raise ValueError(f"ts and equity lengths differ: {ts.shape} vs {equity.shape}")
    if not np.isfinite(equity).all():
        raise ValueError("equity contains NaN/inf")
    peak = np.maximum.accumulate(equity)
    drawdown = (equity / peak - 1.0) * 100.0
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax1.plot(ts, equity, color="tab:blue", linewidth=1)
    ax1.set_title(title)
    ax1.set_ylabel("equity")
    ax1.grid(alpha=0.3)
    ax2.fill_between(ts, drawdown, 0, color="tab:red", alpha=0.4, linewidth=0)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    if split_at is not None:
        for ax in (ax1, ax2):
            ax.axvline(split_at, color="black", linestyle="--", linewidth=1)
        ax1.annotate(
            " in-sample | out-of-sample ",
            (split_at, 0.97),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=8,
        )
    fig.autofmt_xdate()
    return _png(fig)


def sharpe_heatmap_png(
    fast: np.ndarray,
    slow: np.ndarray,
    sharpe: np.ndarray,
    title: str,
    xlabel: str = "fast window",
    ylabel: str = "slow window",
) -> bytes:
    """Sharpe over two parameters (x=``fast``, y=``slow``); missing or non-finite cells blank.

    Axes are categorical (one cell per distinct value), so float parameters such as band
    widths or RSI levels render as well as windows. Several sets on one cell (a third
    parameter) show the best Sharpe of the cell.
    """
    x = np.asarray(fast, dtype=np.float64)
    y = np.asarray(slow, dtype=np.float64)
    z = np.asarray(sharpe, dtype=np.float64)
    if not (x.shape == y.shape == z.shape) or x.ndim != 1 or x.size == 0:
        raise ValueError(
            f"fast, slow, sharpe must be equal-length non-empty 1-D arrays, got "
            f"{x.shape}, {y.shape}, {z.shape}"
        )
    xs, xi = np.unique(x, return_inverse=True)
    ys, yi = np.unique(y, return_inverse=True)
    grid = np.full((ys.size, xs.size), -np.inf)
    np.maximum.at(grid, (yi, xi), np.where(np.isfinite(z), z, -np.inf))
    grid[~np.isfinite(grid)] = np.nan
    fig, ax = plt.subplots(figsize=(6, 4.5))
    finite = grid[np.isfinite(grid)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    im = ax.imshow(
        grid,
        origin="lower",
        aspect="auto",
        cmap="RdYlGn",
        vmin=-lim,
        vmax=lim,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label="Sharpe (annualised)")

    def ticks(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
        pos = np.unique(np.linspace(0, values.size - 1, min(values.size, 10)).round().astype(int))
        return pos, [f"{values[p]:g}" for p in pos]

    ax.set_xticks(*ticks(xs))
    ax.set_yticks(*ticks(ys))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown image with a base64 data URI (for Dagster ``MetadataValue.md``)."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_markdown expects PNG bytes")
    safe_alt = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
