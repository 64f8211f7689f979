"""Shared helpers for backtest tests: price paths and an exact-comparison assertion."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED_MARKET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "market"


def gbm_path(seed: int, n: int, vol: float = 0.01, start: float = 100.0) -> np.ndarray:
    """A geometric random walk, like an hourly crypto series."""
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def assert_metrics_match(
    ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], rtol: float = 1e-9
) -> None:
    """Every metric equal to ``rtol`` relative (1e-12 absolute floor near zero), NaN == NaN."""
    assert set(ours) == set(ref)
    for key in ref:
        a = np.asarray(ours[key], dtype=np.float64)
        b = np.asarray(ref[key], dtype=np.float64)
        assert a.shape == b.shape, key
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=key)
