"""Input checks shared by every backend: fail before any compute, naming what was wrong."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

DIRECTIONS: tuple[str, ...] = ("longonly", "longshort")
# A results-table row is ~300 bytes (three segments of metrics and a label) per set: a million
# sets is ~300 MB before the preview copy and the stored files, and no heatmap of it is readable.
MAX_PARAMETER_SETS = 1_000_000


def check_grid_size(
    what: str, count: int, limit: int = MAX_PARAMETER_SETS, unit: str = "parameter sets"
) -> None:
    """Refuse a grid before it is built: counting is cheap, materialising 10^10 pairs is not."""
    if count > limit:
        raise ValueError(
            f"{what} has {count:,} {unit}; a sweep may have at most {limit:,} parameter "
            "sets: use fewer or coarser values"
        )


def validate_direction(direction: str) -> str:
    """longonly, or longshort (vectorbt's ``direction='both'``: exits reverse to short)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    return direction


def validate_close(close: np.ndarray | Sequence[float]) -> np.ndarray:
    """Close prices as contiguous float64; NaN, inf or non-positive prices are refused."""
    arr = np.asarray(close)
    if arr.ndim != 1:
        raise ValueError(f"close must be a 1-D array of prices, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("close is empty: no price bars to backtest")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"close must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"close has {int(bad.sum())} NaN/inf price(s); first at bar {i}")
    nonpos = arr <= 0
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        raise ValueError(f"close has non-positive price {float(arr[i])!r} at bar {i}")
    return arr


def _windows(name: str, values: np.ndarray | Sequence[int] | int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1:
        raise ValueError(f"{name} windows must be 1-D, got shape {arr.shape}")
    if (
        arr.size
        and not np.issubdtype(arr.dtype, np.integer)
        and (not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)))
    ):
        raise ValueError(f"{name} windows must be whole numbers, got {arr[:5].tolist()}")
    huge = np.abs(arr.astype(np.float64)) >= 2.0**63  # inf, 1e30, big uint64 wrap in int64
    if huge.any():
        raise ValueError(f"{name} window {arr[huge][0].item()!r} is too large")
    return np.ascontiguousarray(arr, dtype=np.int64)


def validate_windows(
    fast: np.ndarray | Sequence[int] | int, slow: np.ndarray | Sequence[int] | int, n_bars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paired (fast, slow) windows: same length, non-empty, 1 <= fast < slow < n_bars."""
    f = _windows("fast", fast)
    s = _windows("slow", slow)
    if f.shape != s.shape:
        raise ValueError(f"fast and slow must pair up: {f.shape[0]} fast vs {s.shape[0]} slow")
    if f.shape[0] == 0:
        raise ValueError("empty parameter grid: no (fast, slow) pairs to evaluate")
    if (f < 1).any() or (s < 1).any():
        bad = int(min(f.min(), s.min()))
        raise ValueError(f"windows must be >= 1, got {bad}")
    if (f >= s).any():
        k = int(np.flatnonzero(f >= s)[0])
        raise ValueError(f"fast window must be < slow window, pair {k} is ({f[k]}, {s[k]})")
    largest = int(s.max())
    if largest >= n_bars:
        raise ValueError(
            f"too few bars: slow window {largest} needs more than {largest} bars, got {n_bars}"
        )
    return f, s


def _is_number(value: object) -> bool:
    """A real number, NumPy scalars included (np.float32 fees are fine); a bool is not one,
    or ``init_cash=True`` would run as 1.0."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def validate_costs(
    fees: float, slippage: float, init_cash: float, periods_per_year: float | None = None
) -> None:
    """Costs are fractions in [0, 1); cash and the annualisation factor are positive."""
    for name, value in (("fees", fees), ("slippage", slippage)):
        if not _is_number(value) or not math.isfinite(value) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
    if not _is_number(init_cash) or not math.isfinite(init_cash) or init_cash <= 0:
        raise ValueError(f"init_cash must be a positive number, got {init_cash!r}")
    if periods_per_year is not None and (
        not _is_number(periods_per_year)
        or not math.isfinite(periods_per_year)
        or periods_per_year <= 0
    ):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")


def validate_inputs(
    close: np.ndarray | Sequence[float],
    fast: np.ndarray | Sequence[int] | int,
    slow: np.ndarray | Sequence[int] | int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prices and windows together (the window bound depends on the bar count)."""
    arr = validate_close(close)
    f, s = validate_windows(fast, slow, arr.shape[0])
    return arr, f, s
