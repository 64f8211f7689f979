"""Dagster side of the trial knowledge base: what `backtest_results` records about its trials,
and the `strategy_recommendations` asset. Thin: the work is `qpipe_dagster.trials`."""

from typing import TYPE_CHECKING

import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, asset

from qpipe_dagster.defs.metadata import dagster_metadata
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.retries import transient_only
from qpipe_dagster.defs.trace import trace_ids
from qpipe_dagster.metadata import Plain

if TYPE_CHECKING:  # validation imports this module to run record_trials
    from qpipe_dagster.backtest.results import SweepReport
    from qpipe_dagster.defs.resources import EmbedderResource, VectorStoreResource
    from qpipe_dagster.defs.validation import BacktestConfig


def concept_symbol(concept: str) -> str:
    """The concept's market symbol, else the default one (QPIPE_DEFAULT_SYMBOL)."""
    from qpipe_dagster.concepts import default_registry
    from qpipe_dagster.settings import default_symbol

    found = default_registry().get(concept)
    return (found.symbol if found is not None and found.symbol else None) or default_symbol()


def record_trials(
    context: AssetExecutionContext,
    config: "BacktestConfig",
    report: "SweepReport",
    close: np.ndarray,
    ts: np.ndarray,
    periods_per_year: float,
    embedder: "EmbedderResource",
    vector_store: "VectorStoreResource",
) -> dict[str, Plain]:
    """Evidence for every set, the robust best set (replacing the in-sample argmax in
    ``report.best`` and its equity curve), the trials ingested, the top ones embedded, and
    the optional walk-forward; returns the metadata to show (`trials.report`)."""
    # heavy (numba kernels, matplotlib): loaded when a sweep runs, not with the code location
    from qpipe_dagster.trials.pipeline import evaluate_and_rank, store_trials
    from qpipe_dagster.trials.report import (
        overfitting_warnings,
        trial_metadata,
        walk_forward_metadata,
    )
    from qpipe_dagster.trials.store import TrialStore
    from qpipe_dagster.trials.walkforward import walk_forward

    c = config
    argmax = dict(report.best)
    concept = context.partition_key
    run_id, message_id = trace_ids(context)
    run = evaluate_and_rank(
        report,
        close,
        ts,
        concept=concept,
        symbol=concept_symbol(concept),
        periods_per_year=periods_per_year,
        fees=c.fees,
        slippage=c.slippage,
        init_cash=c.init_cash,
        direction=c.direction,
        n_blocks=c.pbo_blocks,
        run_id=run_id,
        message_id=message_id,
    )
    top_n = c.trials_top_n
    if top_n > 0:
        encoder = embedder.encoder()
        store = vector_store.open(model=encoder.model_id, dim=encoder.dim)
    else:
        encoder = store = None
    try:
        counts, stored = store_trials(
            run, TrialStore(), top_n=top_n, vector_store=store, encoder=encoder,
            dry_run=c.trials_dry_run,
        )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    warnings = overfitting_warnings(run)
    for text in warnings:
        context.log.warning(f"{concept}: {text}")
    md = trial_metadata(
        run, counts, stored, argmax=argmax, preview_rows=c.preview_rows,
        dry_run=c.trials_dry_run, warnings=warnings,
    )  # fmt: skip
    if c.walk_forward_folds:
        wf = walk_forward(
            close, [r.grid for r in report.runs], n_folds=c.walk_forward_folds,
            periods_per_year=periods_per_year, is_fraction=c.is_fraction,
            fees=c.fees, slippage=c.slippage, init_cash=c.init_cash,
            direction=c.direction, backend=c.backend,
        )  # fmt: skip
        md.update(walk_forward_metadata(wf))
    return md


@asset(
    partitions_def=concepts_partitions,
    group_name="validation",
    kinds={"polars"},
    owners=["team:validation"],
    deps=["backtest_results"],
    description="Robust parameter recommendations per strategy family from the trial store "
    "(the same ranking as `qpipe recommend`), with the DSR of every set against its in-sample "
    "Sharpe and the PBO λ histogram of the latest sweep.",
)
@transient_only  # concept_pipeline retries only transient errors; no trials stored fails once
def strategy_recommendations(context: AssetExecutionContext) -> MaterializeResult:
    # heavy (matplotlib): loaded when the asset runs, not with the code location
    from qpipe_dagster.trials.report import recommendations_report
    from qpipe_dagster.trials.store import TrialStore

    report = recommendations_report(TrialStore(), context.partition_key)
    return MaterializeResult(metadata=dagster_metadata(report))
