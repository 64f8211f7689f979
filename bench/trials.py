"""Storing a sweep's trials vs running the sweep: storage must never be the slow step.

Run from the repo root:  .venv/bin/python bench/trials.py [--sets 1000000] [--bars 3000]

One MA-crossover sweep of about ``--sets`` parameter sets (all fast < slow pairs of windows
2..W) on synthetic hourly bars with a 70/30 in/out-of-sample split, then:
  sweep_s     `backtest.results.sweep_families` (CPU Numba), the step that produces the trials
  evidence_s  `trials.evaluate.evaluate_sweep` (DSR, PBO, stability; a second CPU pass)
  build_s     `trials.records.build_trials` (ids, params JSON, columns)
  ingest_s    `TrialStore.ingest` into an empty store (one zstd Parquet file)
  reingest_s  the same trials again (every row skipped: the idempotent path)
ratio = (build_s + ingest_s) / sweep_s. Numba compile time is excluded (a small warm-up
sweep runs first). The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpipe_dagster.backtest.engine import cpu_name
from qpipe_dagster.backtest.results import sweep_families
from qpipe_dagster.backtest.strategies import ma_grid
from qpipe_dagster.trials.evaluate import evaluate_sweep
from qpipe_dagster.trials.records import bar_interval, build_trials, price_hash
from qpipe_dagster.trials.store import TrialStore


def run(close: np.ndarray, ts: np.ndarray, top: int, store: TrialStore | None) -> dict:
    grid = ma_grid(range(2, top + 1), range(3, top + 1))
    t0 = time.perf_counter()
    report = sweep_families(close, ts, [grid], periods_per_year=8760.0, backend="cpu")
    t1 = time.perf_counter()
    ev = evaluate_sweep(report, close, periods_per_year=8760.0)
    t2 = time.perf_counter()
    trials = build_trials(
        report, ev, concept="bench", symbol="SYN", interval=bar_interval(ts),
        prices=price_hash(ts, close), settings={"fees": 0.001},
    )  # fmt: skip
    t3 = time.perf_counter()
    out = {"sets": grid.size, "sweep_s": t1 - t0, "evidence_s": t2 - t1, "build_s": t3 - t2}
    if store is not None:
        counts = store.ingest(trials)
        t4 = time.perf_counter()
        again = store.ingest(trials)
        t5 = time.perf_counter()
        out.update(ingest_s=t4 - t3, reingest_s=t5 - t4, inserted=counts.inserted,
                   skipped=again.skipped)  # fmt: skip
        files = list((store.root / "data").glob("*.parquet"))
        out["stored_mb"] = sum(f.stat().st_size for f in files) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=int, default=1_000_000)
    ap.add_argument("--bars", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    top = int((1 + math.sqrt(1 + 8 * args.sets)) / 2)  # windows 2..top: about `sets` pairs
    if top >= args.bars:
        sys.exit(f"--bars {args.bars} must exceed the largest window {top}")
    rng = np.random.default_rng(args.seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, args.bars)))
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(args.bars).astype("timedelta64[h]")
    run(close[:400], ts[:400], 20, None)  # compile every kernel first
    with tempfile.TemporaryDirectory() as tmp:
        res = run(close, ts, top, TrialStore(Path(tmp) / "trials"))
    res["ratio_store_vs_sweep"] = (res["build_s"] + res["ingest_s"]) / res["sweep_s"]
    res.update(bars=args.bars, cpu=cpu_name(), command=" ".join(["bench/trials.py", *sys.argv[1:]]))
    for k, v in res.items():
        print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))


if __name__ == "__main__":
    main()
