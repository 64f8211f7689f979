"""Overfitting evidence for a whole sweep: DSR per set, PBO per family and for the sweep,
plateau scores and neighbour drops per objective, Calmar ratios.

Input is `backtest.results.SweepReport` (one row per set in ``report.table``); output arrays
are aligned with those rows. Pure (no Dagster): the asset and the tests call it the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qpipe_dagster.backtest.results import SweepReport
from qpipe_dagster.trials.returns import power_sums, trial_returns
from qpipe_dagster.trials.stability import neighbour_stats
from qpipe_dagster.trials.stats import (
    PBOResult,
    effective_trials,
    expected_max_sharpe,
    mean_correlation,
    moments_from_sums,
    pbo_from_block_sums,
)

OBJECTIVES: tuple[str, ...] = ("sharpe", "sortino", "total_return", "calmar")
DEFAULT_BLOCKS = 16
CORRELATION_SAMPLE = 64  # trials whose full in-sample returns estimate the mean correlation
PBO_WORK = 20_000_000  # splits x trials budget: above it CSCV samples its splits (seeded)


@dataclass
class SweepEvidence:
    """Per-set columns (aligned with the report table) and sweep-level statistics."""

    columns: dict[str, np.ndarray]
    n_trials: int
    n_effective: float
    mean_correlation: float
    var_sharpe: float
    sr0: float
    n_periods: int
    pbo: PBOResult | None
    pbo_by_family: dict[str, PBOResult | None] = field(default_factory=dict)


def calmar(total_return: np.ndarray, max_drawdown: np.ndarray, bars: int, ppy: float) -> np.ndarray:
    """Annualised compound return over |max drawdown|; NaN without a drawdown."""
    tr = np.asarray(total_return, dtype=np.float64)
    dd = np.abs(np.asarray(max_drawdown, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ann = np.power(np.maximum(1.0 + tr, 0.0), ppy / max(bars, 1)) - 1.0
        return np.where(dd > 0, ann / np.where(dd > 0, dd, 1.0), np.nan)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    erfc = np.frompyfunc(math.erfc, 1, 1)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    out[ok] = 0.5 * np.asarray(erfc(-x[ok] / math.sqrt(2.0)), dtype=np.float64)
    out[np.isposinf(x)] = 1.0
    out[np.isneginf(x)] = 0.0
    return out


def _n_blocks(bars: int, wanted: int) -> int:
    s = min(wanted, (bars // 4) // 2 * 2)  # every block keeps >= 4 bars
    return s if s >= 2 else 0


def evaluate_sweep(
    report: SweepReport,
    close: np.ndarray,
    *,
    periods_per_year: float,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    direction: str = "longonly",
    n_blocks: int = DEFAULT_BLOCKS,
    seed: int = 0,
) -> SweepEvidence:
    """DSR, PBO, stability and Calmar for every set of ``report``.

    * DSR uses each set's in-sample per-period returns (where the selection happens): its
      Sharpe, skewness, raw kurtosis and bar count; SR0 from the variance of the in-sample
      Sharpe ratios and N_eff (`stats.effective_trials` from the mean correlation of a
      seeded sample of ``CORRELATION_SAMPLE`` sets' in-sample returns) of its family
      (``dsr``) and of the whole sweep (``dsr_sweep``). Per family, because one family that
      fails systematically (mean reversion in a trend) would otherwise inflate V[SR] and
      the bar for every other family.
    * PBO by CSCV over ``n_blocks`` equal blocks of the bars after the longest warm-up
      window, for each family and for the whole sweep (the selection `backtest_results`
      makes across families).
    """
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even number >= 2, got {n_blocks}")
    close = np.asarray(close, dtype=np.float64)
    n = close.shape[0]
    is_end = report.split_bar if report.split_bar is not None else n
    costs = {"fees": fees, "slippage": slippage, "init_cash": init_cash, "direction": direction}
    warm = max(r.grid.largest_window for r in report.runs)
    s = _n_blocks(n - warm, n_blocks)
    blocks = np.linspace(warm, n, s + 1).round().astype(np.int64) if s else np.array([0, n])
    table = report.table
    has_split = "is_sharpe" in table.column_names
    cols: dict[str, list[np.ndarray]] = {}
    sums, sqs, fams = [], [], []
    for run in report.runs:
        bsum, bsq, isx = power_sums(close, run.grid, blocks, is_end, **costs)
        sums.append(bsum)
        sqs.append(bsq)
        fams.append(run.grid.family)
        sr, sk, ku = moments_from_sums(float(is_end), *isx.T)
        cols.setdefault("sr_period", []).append(sr)
        cols.setdefault("skew", []).append(sk)
        cols.setdefault("kurtosis", []).append(ku)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    n_trials = table.num_rows
    # Calmar per segment, from the table's return and drawdown
    segs = (("", n), ("is_", is_end), ("oos_", n - is_end)) if has_split else (("", n),)
    for prefix, bars in segs:
        out[f"{prefix}calmar"] = calmar(
            table.column(f"{prefix}total_return").to_numpy(),
            table.column(f"{prefix}max_drawdown").to_numpy(),
            bars,
            periods_per_year,
        )
    # plateau / drop of every in-sample objective, within each family's grid
    start = 0
    for run in report.runs:
        stop = start + run.grid.size
        for obj in OBJECTIVES:
            key = f"is_{obj}" if has_split else obj
            vals = out[key] if key in out else table.column(key).to_numpy()
            plateau, drop, _ = neighbour_stats(run.grid.params, vals[start:stop])
            out.setdefault(f"plateau_{obj}", np.full(n_trials, np.nan))[start:stop] = plateau
            out.setdefault(f"drop_{obj}", np.full(n_trials, np.nan))[start:stop] = drop
        start = stop
    # DSR: SR0 from the variance and effective count of the trials the selection was made
    # among. Per family (what `qpipe recommend --family` selects within) as ``dsr``, and over
    # the whole sweep (the cross-family pick `backtest_results` reports) as ``dsr_sweep``.
    rng = np.random.default_rng(seed)
    samples, start = [], 0
    for run in report.runs:
        size = run.grid.size
        local = np.sort(rng.choice(size, min(CORRELATION_SAMPLE, size), replace=False))
        samples.append(trial_returns(close, run.grid.subset(local), is_end, **costs))
        start += size

    def dsr(sl: slice, rets: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        sr, sk, ku = out["sr_period"][sl], out["skew"][sl], out["kurtosis"][sl]
        rho = mean_correlation(rets)
        n_eff = effective_trials(sr.shape[0], rho)
        finite = np.isfinite(sr)
        var_sr = float(np.var(sr[finite], ddof=1)) if finite.sum() > 1 else 0.0
        sr0 = expected_max_sharpe(var_sr, n_eff)
        with np.errstate(invalid="ignore", divide="ignore"):
            denom = 1.0 - sk * sr + (ku - 1.0) / 4.0 * sr * sr
            z = (
                (sr - sr0)
                * math.sqrt(max(is_end - 1, 1))
                / np.sqrt(np.where(denom > 0, denom, np.nan))
            )
        return _norm_cdf(z), n_eff, var_sr, sr0

    out["dsr"] = np.full(n_trials, np.nan)
    out["sr0"] = np.full(n_trials, np.nan)
    start = 0
    for run, rets in zip(report.runs, samples, strict=True):
        sl = slice(start, start + run.grid.size)
        out["dsr"][sl], _, _, out["sr0"][sl] = dsr(sl, rets)
        start += run.grid.size
    both = np.concatenate(samples, axis=1)
    keep = np.random.default_rng(seed).choice(
        both.shape[1], min(CORRELATION_SAMPLE, both.shape[1]), replace=False
    )
    out["dsr_sweep"], n_eff, var_sr, sr0 = dsr(slice(0, n_trials), both[:, np.sort(keep)])
    rho = mean_correlation(both[:, np.sort(keep)])
    out["n_periods"] = np.full(n_trials, is_end, dtype=np.int64)
    # PBO per family and for the sweep
    by_family: dict[str, PBOResult | None] = {}
    counts = np.diff(blocks).astype(np.float64)

    def pbo(bs: np.ndarray, bq: np.ndarray) -> PBOResult | None:
        if not s or bs.shape[0] < 2:
            return None
        return pbo_from_block_sums(
            counts, bs, bq, max_splits=max(200, PBO_WORK // bs.shape[0]), seed=seed
        )

    out["pbo"] = np.full(n_trials, np.nan)
    start = 0
    for fam, bs, bq in zip(fams, sums, sqs, strict=True):
        res = pbo(bs, bq)
        by_family[fam] = res
        out["pbo"][start : start + bs.shape[0]] = res.pbo if res else np.nan
        start += bs.shape[0]
    whole = by_family[fams[0]] if len(fams) == 1 else pbo(np.concatenate(sums), np.concatenate(sqs))
    return SweepEvidence(
        columns=out,
        n_trials=n_trials,
        n_effective=n_eff,
        mean_correlation=rho,
        var_sharpe=var_sr,
        sr0=sr0,
        n_periods=int(is_end),
        pbo=whole,
        pbo_by_family=by_family,
    )
