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

import numpy as np

from qpipe_dagster.backtest.kernels import ma_crossover_sweep
from qpipe_dagster.backtest.validation import validate_costs, validate_direction, validate_inputs

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
        import cupy  # noqa: F401
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
    env = os.environ.get(ENV_VAR)
    if env is None or env.strip() == "":
        return "auto"
    value = env.strip().lower()
    if value not in ("auto", "cpu", "gpu"):
        raise ValueError(f"{ENV_VAR} must be one of cpu, gpu, auto; got {env!r}")
    return value


def run_ma_sweep(
    close: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    *,
    backend: str = "auto",
    **params: float | str,
) -> SweepRun:
    """MA-crossover sweep on the chosen backend; ``params`` are `ma_crossover_sweep`'s keywords.

    'auto' checks for a GPU (CuPy importable and a device visible); the GPU kernel is not
    written yet, so it runs the CPU kernel and records why in ``fallback_reason``. An
    explicit 'gpu' that cannot be honoured is a RuntimeError, never a silent CPU run.
    """
    choice = resolve_backend(backend)
    unknown = set(params) - {"fees", "slippage", "init_cash", "periods_per_year", "direction"}
    if unknown:
        raise ValueError(f"unknown sweep parameter(s): {sorted(unknown)}")
    if "periods_per_year" not in params:
        raise ValueError("periods_per_year is required (e.g. 8760 for hourly bars, 365 daily)")
    validate_direction(str(params.get("direction", "longonly")))
    validate_costs(
        params.get("fees", 0.001),  # type: ignore[arg-type]
        params.get("slippage", 0.0),  # type: ignore[arg-type]
        params.get("init_cash", 10_000.0),  # type: ignore[arg-type]
        params["periods_per_year"],  # type: ignore[arg-type]
    )
    arr, f, s = validate_inputs(close, fast, slow)

    fallback: str | None = None
    if choice in ("auto", "gpu"):
        gpu_name, reason = gpu_status()
        if gpu_name is not None:
            # the CuPy RawKernel port of kernels.simulate_ma_crossover is not written yet
            reason = f"GPU {gpu_name} found, but qpipe has no GPU sweep kernel yet"
        if choice == "gpu":
            raise RuntimeError(f"backend 'gpu' requested but no GPU is usable: {reason}")
        fallback = reason
    if choice == "vectorbt":
        from qpipe_dagster.backtest.reference import vectorbt_ma_crossover

        start = time.perf_counter()
        metrics = vectorbt_ma_crossover(arr, f, s, **params)  # type: ignore[arg-type]
        return SweepRun(metrics, "vectorbt", cpu_name(), None, time.perf_counter() - start)
    start = time.perf_counter()
    metrics = ma_crossover_sweep(arr, f, s, **params)  # type: ignore[arg-type]
    return SweepRun(metrics, "cpu", cpu_name(), fallback, time.perf_counter() - start)
