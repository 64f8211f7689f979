"""From a sweep to stored, ranked trials: what `backtest_results` runs, kept out of Dagster.

`evaluate_and_rank` adds the overfitting evidence to a `SweepReport`, builds its trial
records and picks the reported best set through the same robust ranking as
`qpipe recommend` (never the raw in-sample argmax); `store_trials` ingests them and embeds
the top ones as searchable objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from qpipe_dagster.backtest.results import SweepReport
from qpipe_dagster.backtest.strategies import FAMILY_PARAMS, equity_curve
from qpipe_dagster.trials.evaluate import SweepEvidence, evaluate_sweep
from qpipe_dagster.trials.recommend import Recommendation, hard_pool, rank, recommend
from qpipe_dagster.trials.records import bar_interval, build_trials, price_hash
from qpipe_dagster.trials.store import IngestCounts, TrialStore


@dataclass
class TrialRun:
    trials: pa.Table
    evidence: SweepEvidence
    pick: Recommendation
    best_row: int  # row of report.table reported as the best set
    robust: bool  # False: nothing passed even the relaxed filters; best plateau score shown
    best_id: str = ""
    notes: list[str] = field(default_factory=list)


def _locate(report: SweepReport, row: int) -> tuple[int, int]:
    start = 0
    for i, run in enumerate(report.runs):
        if row < start + run.grid.size:
            return i, row - start
        start += run.grid.size
    raise ValueError(f"row {row} is outside the results table ({start} rows)")


def set_best(report: SweepReport, close: np.ndarray, row: int, costs: dict) -> None:
    """Report table row ``row`` as the best set: the same ``best_*`` fields and equity curve
    `backtest.results` fills for its in-sample argmax."""
    i, k = _locate(report, row)
    run = report.runs[i]
    g = run.grid
    best: dict[str, str | float] = {
        "best_strategy": g.describe(k),
        "best_family": g.family,
        **{f"best_{p}": float(g.params[p][k]) for p in FAMILY_PARAMS[g.family]},
    }
    split = report.split_bar is not None
    for prefix, idx in (("", 0), ("is_", 1), ("oos_", 2)) if split else (("", 0),):
        for key in ("sharpe", "total_return", "max_drawdown", "trade_count"):
            best[f"best_{prefix}{key}"] = float(run.segments[idx][key][k])
    if split:
        best["best_is_oos_sharpe_gap"] = float(best["best_is_sharpe"]) - float(
            best["best_oos_sharpe"]
        )
    report.best = best
    report.equity = equity_curve(close, g, k, **costs)


def evaluate_and_rank(
    report: SweepReport,
    close: np.ndarray,
    ts: np.ndarray,
    *,
    concept: str,
    symbol: str,
    periods_per_year: float,
    fees: float = 0.001,
    slippage: float = 0.0,
    init_cash: float = 10_000.0,
    direction: str = "longonly",
    n_blocks: int = 16,
    now: datetime | None = None,
    run_id: str | None = None,
    message_id: str | None = None,
) -> TrialRun:
    """Evidence, trial records and the robust best set (objective Sharpe, any family);
    `run_id`/`message_id` name the Dagster run and QStash message the trials come from."""
    costs = {"fees": fees, "slippage": slippage, "init_cash": init_cash, "direction": direction}
    evidence = evaluate_sweep(
        report, close, periods_per_year=periods_per_year, n_blocks=n_blocks, **costs
    )
    settings = {**costs, "split_bar": report.split_bar, "bars": len(close),
                "periods_per_year": periods_per_year}  # fmt: skip
    trials = build_trials(
        report,
        evidence,
        concept=concept,
        symbol=symbol,
        interval=bar_interval(ts),
        prices=price_hash(ts, close),
        settings=settings,
        now=now,
        run_id=run_id,
        message_id=message_id,
    )
    df = pl.from_arrow(trials)
    assert isinstance(df, pl.DataFrame)
    pick = recommend(df, objective="sharpe", top=5, dsr="dsr_sweep")  # across families
    ids = df["id"]
    if pick.recommendations:
        best_id, robust = pick.recommendations[0]["id"], True
    else:
        pool, _ = hard_pool(df, "sharpe")
        best_id = rank(pool, "sharpe")["id"][0] if pool.height else ids[0]
        robust = False
    row = int((ids == best_id).arg_max())
    set_best(report, close, row, costs)
    return TrialRun(trials, evidence, pick, row, robust, best_id)


def store_trials(
    run: TrialRun,
    store: TrialStore,
    *,
    top_n: int = 20,
    vector_store: object | None = None,
    encoder: object | None = None,
    dry_run: bool = False,
) -> tuple[IngestCounts, int]:
    """Ingest every trial; embed the ``top_n`` best-ranked ones (any status but rejected)
    into ``vector_store`` under ``<concept>:trials`` and drop that key's other objects.
    Returns (ingest counts, objects stored)."""
    df = pl.from_arrow(run.trials)
    assert isinstance(df, pl.DataFrame)
    embedded: list[str] = []
    stored = 0
    if top_n > 0 and vector_store is not None and encoder is not None and not dry_run:
        from qpipe_dagster.backtest.trials import trial_concept
        from qpipe_dagster.trials.vectors import trial_objects

        pool, _ = hard_pool(df, "sharpe")
        rows = rank(pool, "sharpe").head(top_n).to_dicts()
        objects = trial_objects(rows, encode=encoder.encode, model=encoder.model_id)  # type: ignore[attr-defined]
        concept = str(df["concept"][0])
        vector_store.upsert(objects)  # type: ignore[attr-defined]
        vector_store.delete_missing(  # type: ignore[attr-defined]
            trial_concept(concept), set(objects.column("id").to_pylist())
        )
        embedded = [r["id"] for r in rows]
        stored = objects.num_rows
    counts = store.ingest(
        run.trials, dry_run=dry_run, embedded_ids=embedded if stored or top_n == 0 else None
    )
    if not dry_run:
        store.record_sweep(str(df["concept"][0]), sweep_summary(run))
    return counts, stored


def sweep_summary(run: TrialRun) -> dict:
    """Sweep-level evidence as plain JSON (the λ values too, for the histogram)."""
    ev = run.evidence
    df = pl.from_arrow(run.trials)
    assert isinstance(df, pl.DataFrame)
    return {
        "sweep_id": str(df["sweep_id"][0]),
        "created_at": df["created_at"][0],
        "n_trials": ev.n_trials,
        "n_effective": ev.n_effective,
        "mean_correlation": ev.mean_correlation,
        "var_sharpe": ev.var_sharpe,
        "sr0": ev.sr0,
        "n_periods": ev.n_periods,
        "pbo": ev.pbo.pbo if ev.pbo else None,
        "pbo_splits": ev.pbo.n_splits if ev.pbo else 0,
        "pbo_blocks": ev.pbo.n_blocks if ev.pbo else 0,
        "logits": [round(float(x), 6) for x in ev.pbo.logits] if ev.pbo else [],
        "pbo_by_family": {f: (r.pbo if r else None) for f, r in ev.pbo_by_family.items()},
        "best_id": run.best_id,
        "robust": run.robust,
    }
