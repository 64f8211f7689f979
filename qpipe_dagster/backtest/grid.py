"""Parameter grids for sweeps, validated up front so a bad sweep fails before any compute."""

from __future__ import annotations

from collections.abc import Sequence, Sized

import numpy as np

from qpipe_dagster.backtest.validation import MAX_PARAMETER_SETS, check_grid_size


def _as_windows(name: str, values: range | Sequence[int], max_sets: int) -> np.ndarray:
    if isinstance(values, Sized):  # before list(range(1, 10**9)) takes 8 GB
        check_grid_size(f"{name} window list", len(values), max_sets, "values")
    arr = np.asarray(list(values))
    if arr.size == 0:
        raise ValueError(f"{name} window list is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} windows must be integers, got {arr[:5].tolist()}")
    if (arr < 1).any():
        raise ValueError(f"{name} windows must be >= 1, got {int(arr.min())}")
    return np.unique(arr.astype(np.int64))


def ma_crossover_grid(
    fast: range | Sequence[int],
    slow: range | Sequence[int],
    *,
    n_bars: int | None = None,
    max_sets: int = MAX_PARAMETER_SETS,
) -> tuple[np.ndarray, np.ndarray]:
    """All (fast, slow) pairs with fast < slow, as two int64 arrays (fast-major order).

    Duplicate windows are collapsed. With ``n_bars`` given, a window >= n_bars is refused
    because its SMA would never exist. More than ``max_sets`` pairs is refused with the count
    before anything is allocated (10^5 windows each would be 5 * 10^9 pairs, 80 GB).
    """
    f = _as_windows("fast", fast, max_sets)
    s = _as_windows("slow", slow, max_sets)
    if n_bars is not None:
        largest = int(max(f.max(), s.max()))
        if largest >= n_bars:
            raise ValueError(f"window {largest} needs more than {largest} bars, got {n_bars}")
    first = np.searchsorted(s, f, side="right")  # slow[first[i]:] are the partners of f[i]
    counts = s.size - first
    total = int(counts.sum())
    check_grid_size("MA-crossover grid", total, max_sets)
    if total == 0:
        raise ValueError(
            f"empty grid: no fast < slow pair (fast {f.min()}..{f.max()}, slow {s.min()}..{s.max()})"
        )
    # built pair by pair (fast-major), never as a fast x slow mask that may dwarf the pairs
    starts = np.cumsum(counts) - counts
    slow_idx = np.arange(total) - np.repeat(starts - first, counts)
    return np.ascontiguousarray(np.repeat(f, counts)), np.ascontiguousarray(s[slow_idx])
