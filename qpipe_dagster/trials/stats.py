"""Overfitting statistics as pure functions: Deflated Sharpe ratio and PBO by CSCV.

A sweep tries thousands of parameter sets, so its best in-sample Sharpe is high by chance.
These functions say how much of it survives multiple testing:

* `deflated_sharpe` (Bailey & López de Prado 2014, *The Deflated Sharpe Ratio*): the
  probability that the true Sharpe of the selected set exceeds the best Sharpe that N
  worthless trials would show, given the skewness and kurtosis of its returns.
* `pbo_cscv` (Bailey, Borwein, López de Prado & Zhu 2017, *The Probability of Backtest
  Overfitting*): combinatorially symmetric cross-validation; the share of in-sample /
  out-of-sample splits where the in-sample best ranks at or below the median out of sample.

All Sharpe ratios here are per period (not annualised), as in the papers. The normal
distribution comes from `statistics.NormalDist`, so no SciPy at run time; the CSCV loop is
Numba, as the sweep kernels are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np
from numba import njit, prange

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def expected_max_sharpe(var_sharpe: float, n_trials: float) -> float:
    """E[max SR] of ``n_trials`` unskilled trials whose Sharpe ratios have variance
    ``var_sharpe`` (the DSR paper's SR0, Euler–Mascheroni approximation of the maximum of
    N normals). One trial (no selection) gives 0."""
    if not math.isfinite(var_sharpe) or var_sharpe < 0:
        raise ValueError(f"var_sharpe must be a finite number >= 0, got {var_sharpe!r}")
    if not math.isfinite(n_trials) or n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials!r}")
    if n_trials <= 1 or var_sharpe == 0:
        return 0.0
    z1 = _N.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _N.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(var_sharpe) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def probabilistic_sharpe(
    sharpe: float, benchmark: float, n_periods: int, skew: float, kurtosis: float
) -> float:
    """PSR: P(true SR > ``benchmark``) for an observed per-period ``sharpe`` over
    ``n_periods`` returns with that skewness and raw (non-excess, normal = 3) kurtosis."""
    if n_periods < 2:
        raise ValueError(f"n_periods must be >= 2, got {n_periods}")
    if not (math.isfinite(sharpe) and math.isfinite(skew) and math.isfinite(kurtosis)):
        return float("nan")
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if var <= 0:  # a degenerate return distribution (e.g. one non-zero bar)
        return float("nan")
    return _N.cdf((sharpe - benchmark) * math.sqrt(n_periods - 1) / math.sqrt(var))


def deflated_sharpe(
    sharpe: float,
    n_periods: int,
    skew: float,
    kurtosis: float,
    n_trials: float,
    var_sharpe: float,
) -> float:
    """DSR = PSR against SR0 = `expected_max_sharpe(var_sharpe, n_trials)`.

    ``sharpe`` is the selected set's per-period Sharpe on the returns where the selection
    happened (in sample), ``var_sharpe`` the variance of the per-period Sharpe ratios of
    all trials of the sweep, ``n_trials`` the (effective) number of trials. A DSR >= 0.95
    means the Sharpe is significant after accounting for the search.
    """
    sr0 = expected_max_sharpe(var_sharpe, n_trials)
    return probabilistic_sharpe(sharpe, sr0, n_periods, skew, kurtosis)


def effective_trials(n_trials: int, mean_correlation: float) -> float:
    """Effective number of independent trials: N_eff = rho + (1 - rho) * N.

    ``mean_correlation`` (rho) is the average pairwise correlation of the trials' returns,
    clipped to [0, 1]: independent trials (rho = 0) count N times, identical ones (rho = 1)
    once. Neighbouring MA windows are highly correlated, so a grid of 3,000 sets is worth far
    fewer independent tries; using N_eff keeps DSR from over-penalising dense grids.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    rho = 0.0 if not math.isfinite(mean_correlation) else min(max(mean_correlation, 0.0), 1.0)
    return rho + (1.0 - rho) * n_trials


def mean_correlation(returns: np.ndarray) -> float:
    """Average off-diagonal Pearson correlation of the columns of ``returns`` (T x N);
    columns with zero variance (sets that never traded) are left out; NaN under 2 left."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be 2-D (periods x trials), got shape {r.shape}")
    sd = r.std(axis=0)
    r = r[:, sd > 0]
    if r.shape[1] < 2:
        return float("nan")
    c = np.asarray(np.corrcoef(r, rowvar=False))
    n = r.shape[1]
    return float((c.sum() - np.trace(c)) / (n * (n - 1)))


@dataclass(frozen=True)
class Moments:
    """Per-period Sharpe (ddof=1, as vectorbt), skewness and raw kurtosis of a return series."""

    n: int
    sharpe: float
    skew: float
    kurtosis: float


def moments_from_sums(
    n: np.ndarray | float,
    s1: np.ndarray | float,
    s2: np.ndarray | float,
    s3: np.ndarray | float,
    s4: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sharpe, skew, kurtosis) from power sums n, sum r, sum r^2, sum r^3, sum r^4.

    Power sums are what a single pass over each trial's returns can accumulate, so the
    moments of a million trials never need their return series in memory. Zero variance
    gives Sharpe 0 (a flat set earns nothing) and NaN skew/kurtosis.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.asarray(s1, dtype=np.float64) / n
        m2 = np.asarray(s2) / n - mu**2
        m3 = np.asarray(s3) / n - 3 * mu * np.asarray(s2) / n + 2 * mu**3
        m4 = (
            np.asarray(s4) / n
            - 4 * mu * np.asarray(s3) / n
            + 6 * mu**2 * np.asarray(s2) / n
            - 3 * mu**4
        )
        var1 = m2 * n / (n - 1)
        flat = ~(m2 > 1e-300)
        sharpe = np.where(flat, 0.0, mu / np.sqrt(np.where(flat, 1.0, var1)))
        skew = np.where(flat, np.nan, m3 / np.where(flat, 1.0, m2) ** 1.5)
        kurt = np.where(flat, np.nan, m4 / np.where(flat, 1.0, m2) ** 2)
    return sharpe, skew, kurt


def moments(returns: np.ndarray) -> Moments:
    """`Moments` of one return series (population skewness and raw kurtosis, as the paper)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"returns must be 1-D with >= 2 periods, got shape {r.shape}")
    sh, sk, ku = moments_from_sums(r.size, r.sum(), (r**2).sum(), (r**3).sum(), (r**4).sum())
    return Moments(int(r.size), float(sh), float(sk), float(ku))


@dataclass(frozen=True)
class PBOResult:
    """PBO and the λ (logit) distribution it was read from, one λ per CSCV split."""

    pbo: float
    logits: np.ndarray
    n_splits: int
    n_blocks: int
    n_trials: int


def block_sums(returns: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a T x N returns matrix into ``n_blocks`` row blocks of (near) equal size and
    return (counts[S], sums[N, S], sums of squares[N, S])."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be 2-D (periods x trials), got shape {r.shape}")
    edges = np.linspace(0, r.shape[0], n_blocks + 1).round().astype(np.int64)
    counts = np.diff(edges)
    if (counts < 2).any():
        raise ValueError(f"{r.shape[0]} periods are too few for {n_blocks} blocks of >= 2")
    s1 = np.add.reduceat(r, edges[:-1], axis=0).T
    s2 = np.add.reduceat(r * r, edges[:-1], axis=0).T
    return counts.astype(np.float64), s1, s2


@njit(cache=True, inline="always")
def _sharpe1(n: float, s1: float, s2: float) -> float:
    mu = s1 / n
    var = (s2 - n * mu * mu) / (n - 1.0)
    if not var > 1e-300:
        return 0.0 if math.isfinite(var) else -math.inf
    out = mu / math.sqrt(var)
    return out if math.isfinite(out) else -math.inf


@njit(parallel=True, cache=True)
def _cscv_logits(counts, sums, sumsq, combos):
    """One λ per split; out-of-sample sums are the totals minus the in-sample ones, so each
    (split, trial) costs S/2 additions and no C x N temporary is ever built."""
    n_trials = sums.shape[0]
    total_n = counts.sum()
    tot1 = sums.sum(axis=1)
    tot2 = sumsq.sum(axis=1)
    out = np.empty(combos.shape[0])
    for c in prange(combos.shape[0]):
        blocks = combos[c]
        n_is = 0.0
        for b in blocks:
            n_is += counts[b]
        n_oos = total_n - n_is
        best, best_k = -math.inf, 0
        for k in range(n_trials):
            a1 = 0.0
            a2 = 0.0
            for b in blocks:
                a1 += sums[k, b]
                a2 += sumsq[k, b]
            v = _sharpe1(n_is, a1, a2)
            if v > best or k == 0:
                best, best_k = v, k
        a1 = 0.0
        a2 = 0.0
        for b in blocks:
            a1 += sums[best_k, b]
            a2 += sumsq[best_k, b]
        chosen = _sharpe1(n_oos, tot1[best_k] - a1, tot2[best_k] - a2)
        below = 0
        equal = 0
        for k in range(n_trials):
            a1 = 0.0
            a2 = 0.0
            for b in blocks:
                a1 += sums[k, b]
                a2 += sumsq[k, b]
            v = _sharpe1(n_oos, tot1[k] - a1, tot2[k] - a2)
            if v < chosen:
                below += 1
            elif v == chosen:
                equal += 1
        rank = below + (equal + 1) / 2.0  # average rank, 1 = worst; equal includes n*
        omega = rank / (n_trials + 1.0)
        out[c] = math.log(omega / (1.0 - omega))
    return out


def pbo_from_block_sums(
    counts: np.ndarray,
    sums: np.ndarray,
    sumsq: np.ndarray,
    *,
    max_splits: int | None = None,
    seed: int = 0,
) -> PBOResult:
    """CSCV on per-block power sums; the performance measure is the per-period Sharpe.

    For every choice of S/2 of the S blocks as in-sample (the rest out of sample): n* is the
    trial with the best in-sample Sharpe, ω its out-of-sample rank among the N trials
    divided by N + 1 (rank 1 = worst, ties averaged), λ = ln(ω / (1 - ω)). PBO is the share
    of splits with λ <= 0. ``max_splits`` samples that many splits (seeded) when C(S, S/2)
    x N would be too slow; None uses all C(S, S/2).
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    sumsq = np.atleast_2d(np.asarray(sumsq, dtype=np.float64))
    n_trials, s = sums.shape
    if s < 2 or s % 2:
        raise ValueError(f"CSCV needs an even number of blocks >= 2, got {s}")
    if n_trials < 2:
        raise ValueError(f"PBO needs at least 2 trials, got {n_trials}")
    if counts.shape != (s,) or sumsq.shape != sums.shape:
        raise ValueError("counts, sums and sumsq shapes do not match")
    combos = np.array(list(combinations(range(s), s // 2)), dtype=np.int64)
    if max_splits is not None and combos.shape[0] > max_splits:
        pick = np.random.default_rng(seed).choice(combos.shape[0], max_splits, replace=False)
        combos = combos[np.sort(pick)]
    logits = _cscv_logits(counts, sums, sumsq, combos)
    return PBOResult(float(np.mean(logits <= 0)), logits, int(logits.shape[0]), s, n_trials)


def pbo_cscv(returns: np.ndarray, n_blocks: int = 16, **kw: object) -> PBOResult:
    """PBO of a T x N matrix of per-period trial returns (columns = trials), S = ``n_blocks``."""
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even number >= 2, got {n_blocks}")
    return pbo_from_block_sums(*block_sums(returns, n_blocks), **kw)  # type: ignore[arg-type]
