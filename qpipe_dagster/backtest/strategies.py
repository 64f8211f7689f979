"""Strategy families, their parameter grids, and the CPU sweep entry points.

A `StrategyGrid` is one family plus one array per parameter (all the same length: one entry
per parameter set). It is validated against the bar count before any compute, so a bad
sweep fails with a message naming the family, the parameter and the value.

Families (vectorbt building blocks used by the oracle in `reference.py`):
* ``ma_crossover`` (fast, slow): long when the fast SMA crosses above the slow SMA.
* ``bollinger`` (window, width): long when close < lower band, out (or short) when
  close > upper band; bands are SMA +/- width * rolling std (ddof=0), ``vbt.BBANDS``.
* ``rsi`` (window, low, high): long when RSI < low, out (or short) when RSI > high;
  ``vbt.RSI`` default (``ewm=False``: simple rolling means of gains and losses).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field

import numpy as np

from qpipe_dagster.backtest.kernels import (
    DIRECTION_CODES,
    FAMILY_CODES,
    equity_kernel,
    metrics_dict,
    sweep_kernel,
)
from qpipe_dagster.backtest.validation import (
    check_grid_size,
    validate_close,
    validate_costs,
    validate_direction,
)

FAMILY_PARAMS: dict[str, tuple[str, ...]] = {
    "ma_crossover": ("fast", "slow"),
    "bollinger": ("window", "width"),
    "rsi": ("window", "low", "high"),
}
INT_PARAMS: frozenset[str] = frozenset({"fast", "slow", "window"})
HEATMAP_AXES: dict[str, tuple[str, str]] = {
    "ma_crossover": ("fast", "slow"),
    "bollinger": ("window", "width"),
    "rsi": ("low", "high"),
}


def _param_array(family: str, name: str, values: object) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1:
        raise ValueError(f"{family}: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{family}: {name} must be numeric, got {arr[:5].tolist()}")
    if name in INT_PARAMS:
        if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{family}: {name} windows must be whole numbers, got {arr[:5].tolist()}"
            )
        huge = np.abs(arr.astype(np.float64)) >= 2.0**63  # inf, 1e30, big uint64 wrap in int64
        if huge.any():
            raise ValueError(f"{family}: {name} {arr[huge][0].item()!r} is too large for a window")
        return np.ascontiguousarray(arr, dtype=np.int64)
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{family}: {name} must be finite, got {arr[~np.isfinite(arr)][:3]}")
    return arr


@dataclass(frozen=True)
class StrategyGrid:
    """One strategy family and its parameter sets (equal-length arrays, one entry per set)."""

    family: str
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILY_PARAMS:
            raise ValueError(
                f"unknown strategy family {self.family!r}; use one of {list(FAMILY_PARAMS)}"
            )
        names = FAMILY_PARAMS[self.family]
        if set(self.params) != set(names):
            raise ValueError(
                f"{self.family} takes parameters {list(names)}, got {sorted(self.params)}"
            )
        arrays = {n: _param_array(self.family, n, self.params[n]) for n in names}
        lengths = {n: a.shape[0] for n, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            counts = " vs ".join(f"{v} {k}" for k, v in lengths.items())
            raise ValueError(f"{self.family}: parameter arrays must pair up: {counts}")
        if next(iter(lengths.values())) == 0:
            raise ValueError(f"{self.family}: empty parameter grid (no parameter sets)")
        object.__setattr__(self, "params", arrays)
        self._check_ranges()

    @property
    def size(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    @property
    def largest_window(self) -> int:
        p = self.params
        return (
            int(max(p["fast"].max(), p["slow"].max()))
            if self.family == "ma_crossover"
            else int(p["window"].max())
        )

    def _check_ranges(self) -> None:
        p, fam = self.params, self.family
        if fam == "ma_crossover":
            if (p["fast"] < 1).any() or (p["slow"] < 1).any():
                raise ValueError(
                    f"windows must be >= 1, got {int(min(p['fast'].min(), p['slow'].min()))}"
                )
            bad = np.flatnonzero(p["fast"] >= p["slow"])
            if bad.size:
                k = int(bad[0])
                raise ValueError(
                    "fast window must be < slow window, "
                    f"pair {k} is ({p['fast'][k]}, {p['slow'][k]})"
                )
        elif fam == "bollinger":
            if (p["window"] < 2).any():
                raise ValueError(f"bollinger: window must be >= 2, got {int(p['window'].min())}")
            if (p["width"] <= 0).any():
                raise ValueError(f"bollinger: width must be > 0, got {float(p['width'].min())}")
        else:
            if (p["window"] < 1).any():
                raise ValueError(f"rsi: window must be >= 1, got {int(p['window'].min())}")
            lo, hi = p["low"], p["high"]
            if (lo < 0).any() or (hi > 100).any():
                raise ValueError(
                    f"rsi: thresholds must lie in [0, 100], got low {lo.min()} high {hi.max()}"
                )
            bad = np.flatnonzero(lo >= hi)
            if bad.size:
                k = int(bad[0])
                raise ValueError(f"rsi: low must be < high, set {k} is ({lo[k]}, {hi[k]})")

    def check_bars(self, n_bars: int) -> None:
        """Every window must be shorter than the series, or its indicator never exists."""
        largest = self.largest_window
        if largest >= n_bars:
            name = "slow" if self.family == "ma_crossover" else self.family
            raise ValueError(
                f"too few bars: {name} window {largest} needs more than {largest} bars, "
                f"got {n_bars}"
            )

    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(w1, w2, x1, x2) in the kernel's layout (see `kernels.simulate`)."""
        p, m = self.params, self.size
        zi, zf = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.float64)
        if self.family == "ma_crossover":
            return p["fast"], p["slow"], zf, zf
        if self.family == "bollinger":
            return p["window"], zi, p["width"], zf
        return p["window"], zi, p["low"], p["high"]

    def subset(self, idx: np.ndarray | Sequence[int]) -> StrategyGrid:
        return StrategyGrid(self.family, {k: v[np.asarray(idx)] for k, v in self.params.items()})

    def describe(self, k: int) -> str:
        """Human label of set k, e.g. ``ma_crossover(fast=5, slow=20)``."""
        parts = []
        for name, arr in self.params.items():
            v = arr[k]
            parts.append(f"{name}={int(v)}" if name in INT_PARAMS else f"{name}={float(v):g}")
        return f"{self.family}({', '.join(parts)})"


def _values(family: str, name: str, values: range | Sequence[float]) -> list:
    """Sorted unique values; checked first, because ``sorted`` fails on None/str with a
    TypeError and the pair filters (``a < b``) silently drop NaN. A list with more values than
    a sweep may have sets is refused by its length, before ``range(1, 10**9)`` becomes a list."""
    if isinstance(values, Sized):
        check_grid_size(f"{family}: {name} list", len(values), unit="values")
    arr = np.asarray(list(values))
    if arr.size == 0:
        raise ValueError(f"{family}: {name} list is empty")
    if arr.ndim != 1 or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{family}: {name} must be a flat list of numbers, got {list(values)[:5]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{family}: {name} must be finite, got {arr[~np.isfinite(arr)][:3]}")
    return sorted(set(arr.tolist()))


def ma_grid(fast: range | Sequence[int], slow: range | Sequence[int]) -> StrategyGrid:
    """All (fast, slow) pairs with fast < slow."""
    f, s = _values("ma_crossover", "fast", fast), _values("ma_crossover", "slow", slow)
    count = len(s) * len(f) - int(np.searchsorted(s, f, side="right").sum())
    check_grid_size("ma_crossover grid", count)
    pairs = [(a, b) for a, b in itertools.product(f, s) if a < b]
    if not pairs:
        raise ValueError(f"ma_crossover: empty grid, no fast < slow pair (fast {f}, slow {s})")
    a, b = zip(*pairs, strict=True)
    return StrategyGrid("ma_crossover", {"fast": np.array(a), "slow": np.array(b)})


def bollinger_grid(windows: range | Sequence[int], widths: Sequence[float]) -> StrategyGrid:
    """Every (window, width) combination."""
    w, k = _values("bollinger", "window", windows), _values("bollinger", "width", widths)
    check_grid_size("bollinger grid", len(w) * len(k))
    a, b = zip(*itertools.product(w, k), strict=True)
    return StrategyGrid("bollinger", {"window": np.array(a), "width": np.array(b, dtype=float)})


def rsi_grid(
    windows: range | Sequence[int], lows: Sequence[float], highs: Sequence[float]
) -> StrategyGrid:
    """Every (window, low, high) combination with low < high."""
    w = _values("rsi", "window", windows)
    lo, hi = _values("rsi", "low", lows), _values("rsi", "high", highs)
    pairs = len(lo) * len(hi) - int(np.searchsorted(hi, lo, side="right").sum())
    check_grid_size("rsi grid", len(w) * pairs)
    sets = [(a, b, c) for a, b, c in itertools.product(w, lo, hi) if b < c]
    if not sets:
        raise ValueError(f"rsi: empty grid, no low < high pair (low {lo}, high {hi})")
    a, b, c = zip(*sets, strict=True)
    return StrategyGrid(
        "rsi", {"window": np.array(a), "low": np.array(b, float), "high": np.array(c, float)}
    )


def split_bounds(n_bars: int, split: float | int | None, min_warmup: int = 0) -> np.ndarray:
    """Segment bounds: ``[0, n]`` without a split, else ``[0, s, n]``.

    ``split`` is an in-sample fraction in (0, 1) or a bar index (int). The in-sample part
    must be longer than ``min_warmup`` (the largest window) and both parts >= 2 bars, or it
    could not trade / have a Sharpe.
    """
    if split is None:
        return np.array([0, n_bars], dtype=np.int64)
    if isinstance(split, bool) or not isinstance(split, int | float | np.integer | np.floating):
        raise ValueError(f"split must be a fraction in (0, 1) or a bar index, got {split!r}")
    if isinstance(split, float | np.floating):
        if not math.isfinite(split) or not 0 < split < 1:
            raise ValueError(f"in-sample fraction must be in (0, 1), got {split!r}")
        s = round(n_bars * float(split))
    else:
        s = int(split)
    if s < 2 or n_bars - s < 2:
        raise ValueError(
            f"in-sample/out-of-sample split at bar {s} of {n_bars} leaves a part under 2 bars"
        )
    if s <= min_warmup:
        raise ValueError(
            f"in-sample part has {s} bars, not more than the largest window {min_warmup}: "
            "no in-sample signal could fire"
        )
    return np.array([0, s, n_bars], dtype=np.int64)


def _prepare(
    close: np.ndarray | Sequence[float],
    grid: StrategyGrid,
    fees: float,
    slippage: float,
    init_cash: float,
    periods_per_year: float | None,
    direction: str,
) -> np.ndarray:
    validate_direction(direction)
    validate_costs(fees, slippage, init_cash, periods_per_year)
    arr = validate_close(close)
    grid.check_bars(arr.shape[0])
    return arr


def sweep_cpu(
    close: np.ndarray | Sequence[float],
    grid: StrategyGrid,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
    bounds: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """Metrics per segment of ``bounds`` (default: the whole series) for every set in ``grid``.

    Each element maps `kernels.METRIC_KEYS` to one value per parameter set.
    """
    arr = _prepare(close, grid, fees, slippage, init_cash, periods_per_year, direction)
    b = (
        np.array([0, arr.shape[0]], dtype=np.int64)
        if bounds is None
        else np.asarray(bounds, np.int64)
    )
    w1, w2, x1, x2 = grid.kernel_arrays()
    out = sweep_kernel(
        arr, FAMILY_CODES[grid.family], w1, w2, x1, x2, DIRECTION_CODES[direction],
        float(fees), float(slippage), float(init_cash), float(periods_per_year), b,
    )  # fmt: skip
    return [metrics_dict(out, s) for s in range(b.shape[0] - 1)]


def equity_curve(
    close: np.ndarray | Sequence[float],
    grid: StrategyGrid,
    k: int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float | None = None,
    direction: str = "longonly",
    bounds: np.ndarray | None = None,
) -> np.ndarray:
    """Portfolio value at every bar for parameter set ``k`` (vectorbt's ``pf.value()``).

    With a split in ``bounds`` the out-of-sample portfolio restarts from ``init_cash``.
    """
    arr = _prepare(close, grid, fees, slippage, init_cash, periods_per_year, direction)
    b = (
        np.array([0, arr.shape[0]], dtype=np.int64)
        if bounds is None
        else np.asarray(bounds, np.int64)
    )
    w1, w2, x1, x2 = grid.kernel_arrays()
    return equity_kernel(
        arr, FAMILY_CODES[grid.family], int(w1[k]), int(w2[k]), float(x1[k]), float(x2[k]),
        DIRECTION_CODES[direction], float(fees), float(slippage), float(init_cash), b,
    )  # fmt: skip


def ma_crossover_sweep(
    close: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
) -> dict[str, np.ndarray]:
    """Metrics of every (fast[k], slow[k]) SMA-crossover pair, matching vectorbt's from_signals.

    Keys are `METRIC_KEYS`. ``max_drawdown`` uses vectorbt's sign: a non-positive fraction
    (-0.25 = a 25 % fall from the peak). ``win_rate`` is over closed trades (NaN without
    one); ``trade_count`` includes a trade still open at the last bar. Sharpe/Sortino are
    +inf when the return series has zero spread (e.g. a pair that never trades), as in
    vectorbt.
    """
    grid = StrategyGrid("ma_crossover", {"fast": fast, "slow": slow})
    return sweep_cpu(
        close,
        grid,
        fees=fees,
        slippage=slippage,
        init_cash=init_cash,
        periods_per_year=periods_per_year,
        direction=direction,
    )[0]


def ma_crossover_equity(
    close: np.ndarray,
    fast: int,
    slow: int,
    *,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float | None = None,
    direction: str = "longonly",
) -> np.ndarray:
    """Portfolio value at every bar for one parameter set (vectorbt's ``pf.value()``).

    ``periods_per_year`` is accepted for symmetry with the sweep and unused.
    """
    grid = StrategyGrid("ma_crossover", {"fast": np.atleast_1d(fast), "slow": np.atleast_1d(slow)})
    if grid.size != 1:
        raise ValueError(f"ma_crossover_equity takes one (fast, slow) pair, got {grid.size}")
    return equity_curve(
        close,
        grid,
        0,
        fees=fees,
        slippage=slippage,
        init_cash=init_cash,
        periods_per_year=periods_per_year,
        direction=direction,
    )
