"""The CUDA port must equal the Numba kernel (hence vectorbt) to 1e-9 relative.

Two layers: (1) the CUDA C source itself compiled for the CPU with g++ (``-ffp-contract=off``
like ``--fmad=false``) and run set by set, which checks the port's logic on any machine with
a C++ compiler; (2) the real CuPy kernel on a device, marked ``gpu``.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qpipe_dagster.backtest.engine import gpu_status, run_sweep
from qpipe_dagster.backtest.gpu import CUDA_SOURCE, block_size, chunk_size
from qpipe_dagster.backtest.kernels import (
    DIRECTION_CODES,
    FAMILY_CODES,
    N_METRICS,
    gain_loss_sums,
    running_sum,
    sweep_kernel,
)
from qpipe_dagster.backtest.strategies import (
    StrategyGrid,
    bollinger_grid,
    ma_grid,
    rsi_grid,
    split_bounds,
)
from qpipe_dagster_tests.backtest.helpers import gbm_path

HAS_GPU = gpu_status()[0] is not None
GRIDS = {
    "ma": ma_grid(range(2, 30, 3), range(10, 80, 7)),
    "bollinger": bollinger_grid(range(5, 60, 5), [1.0, 1.5, 2.0, 2.5]),
    "rsi": rsi_grid([3, 7, 14, 21], [20.0, 30.0, 40.0], [60.0, 70.0, 80.0]),
}
CPP_PRELUDE = r"""
#include <cmath>
#include <cstring>
using std::isnan; using std::isinf; using std::fabs; using std::fmax; using std::sqrt;
#define __device__
#define __forceinline__ inline
#define __global__
struct Dim { long long x; };
static Dim blockIdx, blockDim, threadIdx;
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
"""
CPP_DRIVER = r"""
extern "C" void sweep_all(
    const double* close, const double* cs, const double* up, const double* dn, int family,
    const long long* w1, const long long* w2, const double* x1, const double* x2,
    int direction, double fees, double slippage, double init_cash, double ann,
    const long long* bounds, int n_seg, double* out, long long m) {
    blockDim.x = 1; threadIdx.x = 0;
    for (long long k = 0; k < m; ++k) {
        blockIdx.x = k;
        sweep(close, cs, up, dn, family, w1, w2, x1, x2, direction, fees, slippage,
              init_cash, ann, bounds, n_seg, out, m);
    }
}
"""


@pytest.fixture(scope="module")
def cpu_port(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no C++ compiler (g++) to build the CUDA source for the CPU")
    d: Path = tmp_path_factory.mktemp("cuda_port")
    src = d / "port.cpp"
    tol = float(np.finfo(np.float64).eps * 1e3)
    defs = f"#define N_METRICS {N_METRICS}\n#define INV_COND_TOL {tol!r}\n"
    src.write_text(CPP_PRELUDE + defs + CUDA_SOURCE + CPP_DRIVER)
    lib = d / "port.so"
    subprocess.run(
        [
            gxx,
            "-std=c++14",
            "-O2",
            "-ffp-contract=off",
            "-shared",
            "-fPIC",
            str(src),
            "-o",
            str(lib),
        ],
        check=True,
        capture_output=True,
    )
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _run_port(lib: ctypes.CDLL, close, grid: StrategyGrid, direction, fees, bounds) -> np.ndarray:
    family = FAMILY_CODES[grid.family]
    cs = running_sum(close)
    up, dn = gain_loss_sums(close)
    w1, w2, x1, x2 = (np.ascontiguousarray(a) for a in grid.kernel_arrays())
    out = np.empty(((len(bounds) - 1) * N_METRICS, grid.size))
    lib.sweep_all(
        _ptr(close), _ptr(cs), _ptr(up), _ptr(dn), ctypes.c_int(family), _ptr(w1), _ptr(w2),
        _ptr(x1), _ptr(x2), ctypes.c_int(DIRECTION_CODES[direction]), ctypes.c_double(fees),
        ctypes.c_double(0.0005), ctypes.c_double(10_000.0), ctypes.c_double(8760.0),
        _ptr(bounds), ctypes.c_int(len(bounds) - 1), _ptr(out), ctypes.c_longlong(grid.size),
    )  # fmt: skip
    return out


def _numba(close, grid: StrategyGrid, direction, fees, bounds) -> np.ndarray:
    w1, w2, x1, x2 = grid.kernel_arrays()
    return sweep_kernel(
        close, FAMILY_CODES[grid.family], w1, w2, x1, x2, DIRECTION_CODES[direction],
        fees, 0.0005, 10_000.0, 8760.0, bounds,
    )  # fmt: skip


@pytest.mark.parametrize("family", list(GRIDS))
@pytest.mark.parametrize("direction", ["longonly", "longshort"])
@pytest.mark.parametrize("fees", [0.0, 0.001])
def test_cuda_source_logic_equals_numba_on_cpu(cpu_port, family, direction, fees) -> None:
    close = gbm_path(21, 1200, vol=0.015)
    close = np.maximum(np.round(close, 1), 0.1)  # ticks: exact ties
    grid = GRIDS[family]
    bounds = split_bounds(close.shape[0], 0.6, grid.largest_window)
    ours = _run_port(cpu_port, close, grid, direction, fees, bounds)
    ref = _numba(close, grid, direction, fees, bounds)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert (ref[5] > 0).mean() > 0.9  # trades happen: not a vacuous comparison


def test_block_size_spreads_small_grids_over_all_sms() -> None:
    assert block_size(4851, 132) == 32  # 152 blocks instead of 38 on an H100
    assert block_size(1_000_000, 132) == 128
    assert block_size(1, 132) == 32


def test_chunk_size_fits_memory() -> None:
    assert chunk_size(10_000_000, free_bytes=2**30) < 10_000_000
    assert chunk_size(100, free_bytes=2**34) == 100
    assert chunk_size(10**9, free_bytes=0) >= 1


needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device / CuPy not installed")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("family", list(GRIDS))
@pytest.mark.parametrize("direction", ["longonly", "longshort"])
@pytest.mark.parametrize("fees", [0.0, 0.001])
def test_gpu_equals_cpu_kernel(family: str, direction: str, fees: float) -> None:
    from qpipe_dagster.backtest.gpu import gpu_sweep

    close = gbm_path(3, 3000)
    grid = GRIDS[family]
    bounds = split_bounds(close.shape[0], 0.7, grid.largest_window)
    w1, w2, x1, x2 = grid.kernel_arrays()
    args = (FAMILY_CODES[family], w1, w2, x1, x2, DIRECTION_CODES[direction])
    gpu = gpu_sweep(close, *args, fees, 0.0005, 10_000.0, 8760.0, bounds, max_chunk=64)
    cpu = _numba(close, grid, direction, fees, bounds)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.gpu
@needs_gpu
def test_auto_backend_uses_gpu_when_present() -> None:
    close = gbm_path(4, 2000)
    run = run_sweep(close, GRIDS["ma"], periods_per_year=8760)
    cpu = run_sweep(close, GRIDS["ma"], backend="cpu", periods_per_year=8760)
    assert run.backend == "gpu" and run.fallback_reason is None and run.device
    for key, v in cpu.segments[0].items():
        np.testing.assert_allclose(run.segments[0][key], v, rtol=1e-9, atol=1e-12, equal_nan=True)
