"""Backtest engine: fused Numba sweeps that reproduce vectorbt's numbers, plus charts."""
