"""Parameter grids for sweeps, validated up front so a bad sweep fails before any compute."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_windows(name: str, values: range | Sequence[int]) -> np.ndarray:
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
) -> tuple[np.ndarray, np.ndarray]:
    """All (fast, slow) pairs with fast < slow, as two int64 arrays (fast-major order).

    Duplicate windows are collapsed. With ``n_bars`` given, a window >= n_bars is refused
    because its SMA would never exist.
    """
    f = _as_windows("fast", fast)
    s = _as_windows("slow", slow)
    if n_bars is not None:
        largest = int(max(f.max(), s.max()))
        if largest >= n_bars:
            raise ValueError(f"window {largest} needs more than {largest} bars, got {n_bars}")
    ff, ss = np.meshgrid(f, s, indexing="ij")
    keep = ff < ss
    if not keep.any():
        raise ValueError(
            f"empty grid: no fast < slow pair (fast {f.min()}..{f.max()}, slow {s.min()}..{s.max()})"
        )
    return np.ascontiguousarray(ff[keep]), np.ascontiguousarray(ss[keep])
