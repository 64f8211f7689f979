"""Charts for `strategy_recommendations`: DSR against in-sample Sharpe, and PBO's λ histogram."""

from __future__ import annotations

import numpy as np

from qpipe_dagster.backtest.charts import _png, plt

FAMILY_COLOURS = {"ma_crossover": "tab:blue", "bollinger": "tab:orange", "rsi": "tab:green"}


def dsr_vs_sharpe_png(
    is_sharpe: np.ndarray,
    dsr: np.ndarray,
    families: np.ndarray,
    picked: np.ndarray | None = None,
    title: str = "",
) -> bytes:
    """One dot per set: in-sample Sharpe (x) against its DSR (y), coloured by family, the
    0.95 line dashed, recommended sets ringed. High Sharpe with low DSR is luck of the search."""
    x = np.asarray(is_sharpe, dtype=np.float64)
    y = np.asarray(dsr, dtype=np.float64)
    fam = np.asarray(families)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in sorted(set(fam.tolist())):
        m = (fam == name) & np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[m], y[m], s=8, alpha=0.6, label=name, color=FAMILY_COLOURS.get(name))
    if picked is not None and np.asarray(picked).any():
        m = np.asarray(picked, dtype=bool)
        ax.scatter(x[m], y[m], s=80, facecolors="none", edgecolors="black", label="recommended")
    ax.axhline(0.95, color="red", linestyle="--", linewidth=1)
    ax.set_xlabel("in-sample Sharpe (annualised)")
    ax.set_ylabel("deflated Sharpe ratio")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def lambda_histogram_png(logits: np.ndarray, pbo: float | None, title: str = "") -> bytes:
    """λ = logit of the out-of-sample rank of the in-sample best, one per CSCV split; the
    mass left of 0 is the PBO."""
    lam = np.asarray(logits, dtype=np.float64)
    lam = lam[np.isfinite(lam)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if lam.size:
        ax.hist(lam, bins=40, color="tab:blue", alpha=0.75)
    ax.axvline(0.0, color="red", linestyle="--", linewidth=1)
    ax.set_xlabel("λ (logit of OOS relative rank of the IS best); left of 0 = overfit")
    ax.set_ylabel("splits")
    label = "n/a" if pbo is None else f"{pbo:.2f}"
    ax.set_title(f"{title} PBO = {label} ({lam.size} splits)".strip())
    ax.grid(alpha=0.3)
    return _png(fig)
