"""Small PNG charts for Dagster metadata (``MetadataValue.md`` renders a data-URI image)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: assets run in worker processes without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 80


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def equity_drawdown_png(ts: np.ndarray, equity: np.ndarray, title: str) -> bytes:
    """Equity curve over a drawdown panel (drawdown in % below the running peak)."""
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
    fig.autofmt_xdate()
    return _png(fig)


def sharpe_heatmap_png(fast: np.ndarray, slow: np.ndarray, sharpe: np.ndarray, title: str) -> bytes:
    """Sharpe by (fast, slow) window; pairs never evaluated (or non-finite) stay blank."""
    fast = np.asarray(fast, dtype=np.int64)
    slow = np.asarray(slow, dtype=np.int64)
    sharpe = np.asarray(sharpe, dtype=np.float64)
    if not (fast.shape == slow.shape == sharpe.shape) or fast.ndim != 1 or fast.size == 0:
        raise ValueError(
            f"fast, slow, sharpe must be equal-length non-empty 1-D arrays, got "
            f"{fast.shape}, {slow.shape}, {sharpe.shape}"
        )
    fs, fi = np.unique(fast, return_inverse=True)
    ss, si = np.unique(slow, return_inverse=True)
    grid = np.full((ss.size, fs.size), np.nan)
    grid[si, fi] = np.where(np.isfinite(sharpe), sharpe, np.nan)
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
        extent=(fs[0] - 0.5, fs[-1] + 0.5, ss[0] - 0.5, ss[-1] + 0.5),
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label="Sharpe (annualised)")
    ax.set_xlabel("fast window")
    ax.set_ylabel("slow window")
    ax.set_title(title)
    return _png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown image with a base64 data URI (for Dagster ``MetadataValue.md``)."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_markdown expects PNG bytes")
    safe_alt = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
