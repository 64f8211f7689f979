"""Dagster side of the trial knowledge base: what `backtest_results` records about its trials,
and the `strategy_recommendations` asset. Thin: the work is `qpipe_dagster.trials`."""

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.retries import transient_only
from qpipe_dagster.run_tags import TAG_MESSAGE_ID

if TYPE_CHECKING:  # validation imports this module to run record_trials
    from qpipe_dagster.backtest.results import SweepReport
    from qpipe_dagster.defs.resources import EmbedderResource, VectorStoreResource
    from qpipe_dagster.defs.validation import BacktestConfig

PBO_WARN = 0.5
REC_COLUMNS = ("family", "status", "label", "score", "oos_sharpe", "dsr", "pbo", "trades", "review",
               "id")  # fmt: skip


def concept_symbol(concept: str) -> str:
    """The concept's market symbol, else the default one (QPIPE_DEFAULT_SYMBOL)."""
    from qpipe_dagster.concepts import default_registry
    from qpipe_dagster.settings import default_symbol

    found = default_registry().get(concept)
    return (found.symbol if found is not None and found.symbol else None) or default_symbol()


def _num(v: object) -> float | str:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else "n/a"


def _fmt(v: object) -> str:
    x = _num(v)
    return x if isinstance(x, str) else f"{x:.2f}"


def _md_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if math.isfinite(v) else "n/a"
        return "n/a" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c)) for c in columns) + " |\n" for r in rows)


def record_trials(
    context: AssetExecutionContext,
    config: "BacktestConfig",
    report: "SweepReport",
    close: np.ndarray,
    ts: np.ndarray,
    periods_per_year: float,
    embedder: "EmbedderResource",
    vector_store: "VectorStoreResource",
) -> dict:
    """Evidence for every set, the robust best set (replacing the in-sample argmax in
    ``report.best`` and its equity curve), the trials ingested, the top ones embedded, and
    the optional walk-forward; returns the metadata to show."""
    from qpipe_dagster.trials.pipeline import evaluate_and_rank, store_trials
    from qpipe_dagster.trials.recommend import hard_pool, rank
    from qpipe_dagster.trials.store import TrialStore

    c = config
    argmax = dict(report.best)
    concept = context.partition_key
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
        run_id=context.run_id,
        message_id=context.run.tags.get(TAG_MESSAGE_ID),
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
    df = pl.from_arrow(run.trials)
    assert isinstance(df, pl.DataFrame)
    best = df.row(run.best_row, named=True)
    ev = run.evidence
    pbo = ev.pbo.pbo if ev.pbo else None
    md: dict = {
        "ranking": "robust: plateau in-sample Sharpe (set + grid neighbours) after the "
        "recommend filters (OOS, DSR across the sweep, trades); see docs/trials.md",
        "recommend_status": run.pick.status if run.robust else "none (best plateau shown)",
        "recommend_reasons": "; ".join(run.pick.reasons) or "none",
        "best_trial_id": run.best_id,
        "dsr": _num(best["dsr"]),
        "dsr_sweep": _num(best["dsr_sweep"]),
        "pbo": _num(pbo),
        **{f"pbo_{f}": _num(r.pbo if r else None) for f, r in ev.pbo_by_family.items()},
        "n_trials": ev.n_trials,
        "n_effective_trials": round(ev.n_effective, 2),
        "is_argmax_strategy": str(argmax.get("best_strategy")),
        "is_argmax_oos_sharpe": _num(argmax.get("best_oos_sharpe", argmax.get("best_sharpe"))),
        "trials_stored": stored,
        "trials_dry_run": bool(c.trials_dry_run),
        **{f"trials_{k}": v for k, v in counts.as_dict().items()},
    }
    warnings = []
    if pbo is not None and pbo > PBO_WARN:
        warnings.append(
            f"PBO {pbo:.2f} > {PBO_WARN}: the in-sample best set ranks below the median out of "
            "sample in most splits; treat these results as overfit"
        )
    if run.robust and run.pick.status == "degraded":
        warnings.append(
            "the best set passed only relaxed filters (" + "; ".join(run.pick.reasons) + ")"
        )
    if not run.robust:
        warnings.append(
            f"no set passed the recommend filters even relaxed (best set's DSR "
            f"{_fmt(best['dsr_sweep'])} across the sweep): its in-sample result is likely luck"
        )
    for text in warnings:
        context.log.warning(f"{concept}: {text}")
    md["overfitting_warning"] = "; ".join(warnings) or "none"
    pool, _ = hard_pool(df, "sharpe")
    shown = ["label", "is_sharpe", "oos_sharpe", "plateau_sharpe", "dsr", "dsr_sweep", "pbo",
             "trade_count"]  # fmt: skip
    preview = rank(pool, "sharpe").head(c.preview_rows)
    md["top_results"] = MetadataValue.md(
        _md_table(preview.to_dicts(), [s for s in shown if s in preview.columns])
    )
    folds = c.walk_forward_folds
    if folds:
        from qpipe_dagster.trials.walkforward import walk_forward

        wf = walk_forward(
            close, [r.grid for r in report.runs], n_folds=folds,
            periods_per_year=periods_per_year, is_fraction=c.is_fraction,
            fees=c.fees, slippage=c.slippage, init_cash=c.init_cash,
            direction=c.direction, backend=c.backend,
        )  # fmt: skip
        md["walk_forward_oos_sharpe"] = _num(wf.sharpe)
        md["walk_forward_oos_return"] = _num(wf.total_return)
        md["walk_forward_folds"] = MetadataValue.md(
            _md_table(
                wf.folds, ["fold", "is_bars", "oos_bars", "chosen", "oos_sharpe", "oos_return"]
            )
        )
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
    from qpipe_dagster.backtest.charts import png_markdown
    from qpipe_dagster.trials.charts import dsr_vs_sharpe_png, lambda_histogram_png
    from qpipe_dagster.trials.recommend import FAMILIES, STATUSES, recommend
    from qpipe_dagster.trials.store import TrialStore

    concept = context.partition_key
    store = TrialStore()
    df = store.frame(concept)
    if df.height == 0:
        raise ValueError(
            f"no trials stored for concept {concept!r} under {store.root}: materialize "
            "backtest_results for it first"
        )
    rows, status = [], {}
    for family in FAMILIES:
        if family not in set(df["family"].to_list()):
            continue
        rec = recommend(df, objective="sharpe", family=family, concept=concept, top=3)
        status[f"status_{family}"] = rec.status
        if rec.reasons:
            status[f"reasons_{family}"] = "; ".join(rec.reasons)
        for r in rec.recommendations:
            rows.append({"family": family, "status": rec.status, "label": r["label"],
                         "score": r["score"], "oos_sharpe": r["oos"]["sharpe"], "dsr": r["dsr"],
                         "pbo": r["pbo"], "trades": r["trades"], "review": r["status"],
                         "id": r["id"][:12]})  # fmt: skip
    summary = store.sweep(concept) or {}
    latest = df.filter(pl.col("sweep_id") == summary["sweep_id"]) if summary else df
    picked = latest["id"].str.slice(0, 12).is_in([r["id"] for r in rows]).to_numpy()
    scatter = dsr_vs_sharpe_png(
        latest["is_sharpe" if "is_sharpe" in latest.columns else "sharpe"].to_numpy(),
        latest["dsr"].to_numpy(),
        latest["family"].to_numpy(),
        picked,
        f"{concept}: DSR vs in-sample Sharpe",
    )
    hist = lambda_histogram_png(
        np.asarray(summary.get("logits", []), dtype=np.float64), summary.get("pbo"), concept
    )
    history = store.history()
    history = history.filter(pl.col("concept") == concept) if history.height else history
    changes = dict(history.group_by("to_status").len().iter_rows()) if history.height else {}
    return MaterializeResult(
        metadata={
            "recommendations": MetadataValue.md(_md_table(rows, list(REC_COLUMNS))),
            "dsr_vs_is_sharpe": MetadataValue.md(png_markdown(scatter, "DSR vs in-sample Sharpe")),
            "pbo_lambda_histogram": MetadataValue.md(png_markdown(hist, "PBO lambda histogram")),
            "pbo": _num(summary.get("pbo")),
            "trials": df.height,
            "trials_in_latest_sweep": latest.height,
            **{f"trials_{s}": int((df["status"] == s).sum()) for s in STATUSES},
            **{f"status_changes_to_{k}": int(v) for k, v in changes.items()},
            **status,
        }
    )
