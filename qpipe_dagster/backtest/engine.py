"""Pick a backend (GPU, CPU Numba, or the vectorbt oracle), run a sweep, say what ran where.

Dagster metadata shows `SweepRun.backend`, `device` and `fallback_reason`, so a run that
silently fell back from GPU to CPU is visible rather than just slow.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from functools import cache
from typing import TypedDict, Unpack

import numpy as np

from qpipe_dagster.backtest.gpu import device_name, gpu_sweep  # CuPy itself is imported on use
from qpipe_dagster.backtest.kernels import DIRECTION_CODES, FAMILY_CODES, metrics_dict
from qpipe_dagster.backtest.reference import vectorbt_sweep  # vectorbt itself is imported on use
from qpipe_dagster.backtest.strategies import StrategyGrid, sweep_cpu
from qpipe_dagster.backtest.validation import validate_close, validate_costs, validate_direction
from qpipe_dagster.settings import env_value

BACKENDS: tuple[str, ...] = ("auto", "cpu", "gpu", "vectorbt")
ENV_VAR = "QPIPE_BACKEND"


@dataclass(frozen=True)
class SweepRun:
    """Result of one sweep: metrics keyed like `kernels.METRIC_KEYS`, plus where it ran."""

    metrics: dict[str, np.ndarray]
    backend: str  # "cpu" | "gpu" | "vectorbt"
    device: str
    fallback_reason: str | None
    seconds: float


@cache
def cpu_name() -> str:
    """CPU model and core count, for run metadata."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def gpu_status() -> tuple[str | None, str | None]:
    """(GPU name, None) when a CUDA device is usable through CuPy, else (None, reason)."""
    try:
        import cupy  # pyright: ignore[reportMissingImports]  (the optional gpu extra)
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return None, f"CuPy not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CUDA runtime unavailable ({type(exc).__name__}: {exc})"
    if count <= 0:
        return None, "no CUDA device visible"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:
        name = "CUDA device 0"
    return name, None


def resolve_backend(backend: str = "auto") -> str:
    """An explicit non-auto argument wins, else $QPIPE_BACKEND, else 'auto'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    env = env_value(ENV_VAR)
    if env is None:
        return "auto"
    value = env.lower()
    if value not in ("auto", "cpu", "gpu"):
        raise ValueError(f"{ENV_VAR} must be one of cpu, gpu, auto; got {env!r}")
    return value


@dataclass(frozen=True)
class GridRun:
    """A sweep of one `StrategyGrid`: metrics per segment (IS, OOS or the whole series)."""

    grid: StrategyGrid
    segments: list[dict[str, np.ndarray]]
    bounds: np.ndarray
    backend: str  # "cpu" | "gpu" | "vectorbt"
    device: str
    fallback_reason: str | None
    seconds: float


def choose_backend(backend: str = "auto") -> tuple[str, str | None]:
    """(backend that will run, reason the GPU is not used or None).

    'auto' takes the GPU when CuPy sees a device (``getDeviceCount() > 0``), else the CPU
    with the reason; an explicit 'gpu' that cannot be honoured is a RuntimeError, never a
    silent CPU run.
    """
    choice = resolve_backend(backend)
    if choice in ("cpu", "vectorbt"):
        return choice, None
    name, reason = gpu_status()
    if name is not None:
        return "gpu", None
    if choice == "gpu":
        raise RuntimeError(f"backend 'gpu' requested but no GPU is usable: {reason}")
    return "cpu", reason


def run_sweep(
    close: np.ndarray,
    grid: StrategyGrid,
    *,
    backend: str = "auto",
    bounds: np.ndarray | None = None,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    periods_per_year: float,
    direction: str = "longonly",
) -> GridRun:
    """Sweep ``grid`` on the chosen backend; inputs are validated before any compute.

    ``bounds`` are segment bounds from `strategies.split_bounds` (default: whole series).
    A GPU failure at run time under 'auto' (e.g. NVRTC missing) falls back to the CPU and
    says why; under an explicit 'gpu' it raises.
    """
    validate_direction(direction)
    validate_costs(fees, slippage, init_cash, periods_per_year)
    arr = validate_close(close)
    grid.check_bars(arr.shape[0])
    b = np.array([0, arr.shape[0]], np.int64) if bounds is None else np.asarray(bounds, np.int64)
    if b.ndim != 1 or b.shape[0] < 2 or (np.diff(b) < 1).any() or b[0] < 0 or b[-1] > arr.shape[0]:
        raise ValueError(f"bounds must be increasing bar indices within 0..{arr.shape[0]}, got {b}")
    choice, fallback = choose_backend(backend)
    kw = {
        "fees": float(fees),
        "slippage": float(slippage),
        "init_cash": float(init_cash),
        "periods_per_year": float(periods_per_year),
        "direction": direction,
    }
    start = time.perf_counter()
    if choice == "vectorbt":
        segs = [
            vectorbt_sweep(arr, grid, start=int(b[s]), end=int(b[s + 1]), **kw)
            for s in range(b.shape[0] - 1)
        ]
        for seg in segs:
            seg["trade_count"] = seg["trade_count"].astype(np.int64)
        return GridRun(grid, segs, b, "vectorbt", cpu_name(), None, time.perf_counter() - start)
    if choice == "gpu":
        w1, w2, x1, x2 = grid.kernel_arrays()
        try:
            out = gpu_sweep(
                arr, FAMILY_CODES[grid.family], w1, w2, x1, x2, DIRECTION_CODES[direction],
                kw["fees"], kw["slippage"], kw["init_cash"], kw["periods_per_year"], b,
            )  # fmt: skip
        except Exception as exc:  # CUDA/NVRTC errors have many types
            if resolve_backend(backend) == "gpu":
                raise RuntimeError(f"GPU sweep failed: {type(exc).__name__}: {exc}") from exc
            fallback = f"GPU sweep failed, ran on CPU: {type(exc).__name__}: {exc}"
        else:
            segs = [metrics_dict(out, s) for s in range(b.shape[0] - 1)]
            return GridRun(grid, segs, b, "gpu", device_name(), None, time.perf_counter() - start)
        start = time.perf_counter()
    segs = sweep_cpu(arr, grid, bounds=b, **kw)
    return GridRun(grid, segs, b, "cpu", cpu_name(), fallback, time.perf_counter() - start)


class SweepParams(TypedDict, total=False):
    """`ma_crossover_sweep`'s keywords (periods_per_year is required at run time)."""

    fees: float
    slippage: float
    init_cash: float
    periods_per_year: float
    direction: str


def run_ma_sweep(
    close: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    *,
    backend: str = "auto",
    **params: Unpack[SweepParams],
) -> SweepRun:
    """MA-crossover sweep on the chosen backend; ``params`` are `ma_crossover_sweep`'s keywords."""
    unknown = set(params) - {"fees", "slippage", "init_cash", "periods_per_year", "direction"}
    if unknown:
        raise ValueError(f"unknown sweep parameter(s): {sorted(unknown)}")
    if "periods_per_year" not in params:
        raise ValueError("periods_per_year is required (e.g. 8760 for hourly bars, 365 daily)")
    resolve_backend(backend)
    arr = validate_close(close)
    grid = StrategyGrid("ma_crossover", {"fast": fast, "slow": slow})
    run = run_sweep(arr, grid, backend=backend, **params)
    return SweepRun(run.segments[0], run.backend, run.device, run.fallback_reason, run.seconds)
