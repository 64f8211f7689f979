"""MA-crossover sweep throughput: vectorbt (numba engine) vs the qpipe CPU kernel vs GPU.

Run from the repo root:  .venv/bin/python bench/backtest.py [--bars 50000] [--prices FILE]
    [--engines vectorbt,cpu,gpu] [--vectorbt-sets 120] [--max-window 100]

All window pairs 2..max-window (4,851 sets for 100) on synthetic bars (or a real price file,
columns mapped by name). Throughput is parameter-set x bars per second (cells_per_s). Numba
compile time is excluded: every engine is warmed up on a small input first. vectorbt runs
end to end (MA.run + crossed_above/below + Portfolio.from_signals + metrics) on an evenly
spaced subset of the grid when --vectorbt-sets is smaller than the grid, and its cells/s is
extrapolated from that subset (the JSON says so). The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpipe_dagster.backtest.engine import cpu_name, gpu_status
from qpipe_dagster.backtest.grid import ma_crossover_grid
from qpipe_dagster.backtest.kernels import METRIC_KEYS
from qpipe_dagster.backtest.strategies import ma_crossover_sweep

PARAMS = {"fees": 0.001, "slippage": 0.0, "init_cash": 10_000.0, "periods_per_year": 8760.0}


def synthetic_close(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, n)))


def max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest relative difference over all metrics (1e-12 absolute floor; equal inf/NaN = 0)."""
    worst = 0.0
    for key in METRIC_KEYS:
        x = np.asarray(a[key], dtype=np.float64)
        y = np.asarray(b[key], dtype=np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
        rel = np.where(same, 0.0, rel)
        worst = max(worst, float(np.max(rel)) if rel.size else 0.0)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", type=int, default=None, help="bars (default 50000 synthetic)")
    ap.add_argument("--prices", type=Path, default=None, help="real OHLCV CSV/Parquet file")
    ap.add_argument("--engines", default="vectorbt,cpu,gpu")
    ap.add_argument("--vectorbt-sets", type=int, default=120, help="vectorbt subset size")
    ap.add_argument("--max-window", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="CPU timing: best of N")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    unknown = engines - {"vectorbt", "cpu", "gpu"}
    if unknown:
        ap.error(f"unknown engine(s) {sorted(unknown)}; choose from vectorbt,cpu,gpu")

    if args.prices is not None:
        from qpipe_dagster.market.prices import load_prices

        close = load_prices(args.prices).frame["close"].to_numpy()
        if args.bars:
            close = close[-args.bars :]
        source = str(args.prices)
    else:
        close = synthetic_close(args.bars or 50_000, args.seed)
        source = f"synthetic GBM seed {args.seed}"
    windows = range(2, args.max_window + 1)
    # a benchmark sizes its own sweep: the 1M-set limit guards asset configs, not this
    fast, slow = ma_crossover_grid(windows, windows, max_sets=len(windows) ** 2)
    n_bars, n_sets = close.shape[0], fast.shape[0]
    print(f"grid {n_sets} sets x {n_bars} bars ({source}); CPU: {cpu_name()}")

    result: dict = {
        "bench": "backtest_ma_crossover",
        "bars": n_bars,
        "sets": n_sets,
        "source": source,
        "params": PARAMS,
        "cpu": cpu_name(),
        "compile_time_excluded": True,
        "cells_per_s": {"vectorbt": None, "cpu": None, "gpu": None},
        "seconds": {"vectorbt": None, "cpu": None, "gpu": None},
    }
    warm = close[: max(300, args.max_window + 50)]
    cpu_metrics = None
    if "cpu" in engines or "vectorbt" in engines:
        ma_crossover_sweep(warm, fast[:8], slow[:8], **PARAMS)  # numba compile / cache load
        best = np.inf
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            cpu_metrics = ma_crossover_sweep(close, fast, slow, **PARAMS)
            best = min(best, time.perf_counter() - t0)
        result["seconds"]["cpu"] = best
        result["cells_per_s"]["cpu"] = n_sets * n_bars / best
        print(f"cpu      {best:8.3f} s  {n_sets * n_bars / best / 1e6:10.1f} M cells/s")

    if "vectorbt" in engines:
        from qpipe_dagster.backtest.reference import vectorbt_ma_crossover

        k = min(max(1, args.vectorbt_sets), n_sets)
        idx = np.unique(np.linspace(0, n_sets - 1, k).round().astype(np.int64))
        vectorbt_ma_crossover(warm, fast[:4], slow[:4], **PARAMS)  # numba compile / cache load
        t0 = time.perf_counter()
        ref = vectorbt_ma_crossover(close, fast[idx], slow[idx], **PARAMS)
        secs = time.perf_counter() - t0
        cells = idx.size * n_bars / secs
        result["seconds"]["vectorbt"] = secs
        result["cells_per_s"]["vectorbt"] = cells
        result["vectorbt_sets_timed"] = int(idx.size)
        result["vectorbt_extrapolated"] = bool(idx.size < n_sets)
        if idx.size < n_sets:
            result["vectorbt_note"] = (
                f"vectorbt timed on {idx.size} evenly spaced sets of {n_sets}; cells/s "
                f"extrapolated (full grid would take ~{n_sets * n_bars / cells:.0f} s)"
            )
        print(f"vectorbt {secs:8.3f} s  {cells / 1e6:10.1f} M cells/s  ({idx.size} sets)")
        sub = {key: v[idx] for key, v in cpu_metrics.items()}
        result.setdefault("max_rel_diff", {})["cpu_vs_vectorbt"] = max_rel_diff(sub, ref)
        result["compared_sets"] = int(idx.size)

    gpu_reason = None
    if "gpu" in engines:
        name, gpu_reason = gpu_status()
        if name is not None:
            from qpipe_dagster.backtest.gpu import gpu_sweep
            from qpipe_dagster.backtest.strategies import StrategyGrid

            grid = StrategyGrid("ma_crossover", {"fast": fast, "slow": slow})
            w1, w2, x1, x2 = grid.kernel_arrays()
            bounds = np.array([0, n_bars], dtype=np.int64)
            gargs = (0, w1, w2, x1, x2, 0, PARAMS["fees"], PARAMS["slippage"])
            gargs += (PARAMS["init_cash"], PARAMS["periods_per_year"])
            wb = np.array([0, warm.shape[0]], dtype=np.int64)
            gpu_sweep(warm, *gargs, wb)  # NVRTC compile + CUDA context, excluded
            best = np.inf
            for _ in range(max(1, args.repeats)):
                t0 = time.perf_counter()
                out = gpu_sweep(close, *gargs, bounds)
                best = min(best, time.perf_counter() - t0)
            gpu_metrics = {key: out[j] for j, key in enumerate(METRIC_KEYS)}
            result["seconds"]["gpu"] = best
            result["cells_per_s"]["gpu"] = n_sets * n_bars / best
            result["gpu_device"] = name
            print(
                f"gpu      {best:8.3f} s  {n_sets * n_bars / best / 1e6:10.1f} M cells/s  ({name})"
            )
            if cpu_metrics is not None:
                result.setdefault("max_rel_diff", {})["gpu_vs_cpu"] = max_rel_diff(
                    gpu_metrics, cpu_metrics
                )
    result["gpu_unavailable_reason"] = gpu_reason

    cps = result["cells_per_s"]
    result["ratio_cpu_vs_vectorbt"] = (
        cps["cpu"] / cps["vectorbt"] if cps["cpu"] and cps["vectorbt"] else None
    )
    result["ratio_gpu_vs_cpu"] = cps["gpu"] / cps["cpu"] if cps["gpu"] and cps["cpu"] else None
    result.setdefault("max_rel_diff", {})
    result["max_rel_diff"].setdefault("cpu_vs_vectorbt", None)
    result["max_rel_diff"].setdefault("gpu_vs_cpu", None)
    if result["ratio_cpu_vs_vectorbt"]:
        print(f"cpu / vectorbt = {result['ratio_cpu_vs_vectorbt']:.1f}x")
    if result["ratio_gpu_vs_cpu"]:
        print(f"gpu / cpu = {result['ratio_gpu_vs_cpu']:.1f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
