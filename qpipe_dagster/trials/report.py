"""What the trial assets report, as plain metadata (no Dagster).

`overfitting_warnings` decides which warnings a sweep earns; `trial_metadata` and
`walk_forward_metadata` are the trial evidence `backtest_results` shows beside its best set;
`recommendations_report` is the whole of `strategy_recommendations`: the per-family robust
picks (the ranking of `qpipe recommend`), the DSR scatter and the PBO λ histogram.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from qpipe_dagster.backtest.charts import png_markdown
from qpipe_dagster.metadata import Markdown, Plain, figure, markdown_table
from qpipe_dagster.trials.charts import dsr_vs_sharpe_png, lambda_histogram_png
from qpipe_dagster.trials.pipeline import TrialRun
from qpipe_dagster.trials.recommend import FAMILIES, STATUSES, hard_pool, rank, recommend
from qpipe_dagster.trials.store import IngestCounts, TrialStore
from qpipe_dagster.trials.walkforward import WalkForward

PBO_WARN = 0.5  # above it the in-sample best set is below the OOS median in most splits
RANKING = (
    "robust: plateau in-sample Sharpe (set + grid neighbours) after the recommend filters "
    "(OOS, DSR across the sweep, trades); see docs/trials.md"
)
PREVIEW_COLUMNS = ("label", "is_sharpe", "oos_sharpe", "plateau_sharpe", "dsr", "dsr_sweep",
                   "pbo", "trade_count")  # fmt: skip
FOLD_COLUMNS = ("fold", "is_bars", "oos_bars", "chosen", "oos_sharpe", "oos_return")
REC_COLUMNS = ("family", "status", "label", "score", "oos_sharpe", "dsr", "pbo", "trades", "review",
               "id")  # fmt: skip
SHORT_ID = 12  # characters of a trial id shown in the recommendations table


def _frame(run: TrialRun) -> pl.DataFrame:
    df = pl.from_arrow(run.trials)
    assert isinstance(df, pl.DataFrame)
    return df


def _two_places(value: object) -> str:
    x = figure(value)
    return x if isinstance(x, str) else f"{x:.2f}"


def overfitting_warnings(run: TrialRun) -> list[str]:
    """Why the reported best set may be luck: a high PBO, only relaxed filters passed, or no
    set passed even those. Empty when the evidence holds up."""
    best = _frame(run).row(run.best_row, named=True)
    pbo = run.evidence.pbo.pbo if run.evidence.pbo else None
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
            f"{_two_places(best['dsr_sweep'])} across the sweep): its in-sample result is likely "
            "luck"
        )
    return warnings


def trial_metadata(
    run: TrialRun,
    counts: IngestCounts,
    stored: int,
    *,
    argmax: dict,
    preview_rows: int,
    dry_run: bool,
    warnings: list[str],
) -> dict[str, Plain]:
    """The evidence for the reported best set against the in-sample ``argmax`` it replaced,
    what the trial store did, the `overfitting_warnings` and the top of the robust ranking."""
    df = _frame(run)
    best = df.row(run.best_row, named=True)
    ev = run.evidence
    pool, _ = hard_pool(df, "sharpe")
    preview = rank(pool, "sharpe").head(preview_rows)
    return {
        "ranking": RANKING,
        "recommend_status": run.pick.status if run.robust else "none (best plateau shown)",
        "recommend_reasons": "; ".join(run.pick.reasons) or "none",
        "best_trial_id": run.best_id,
        "dsr": figure(best["dsr"]),
        "dsr_sweep": figure(best["dsr_sweep"]),
        "pbo": figure(ev.pbo.pbo if ev.pbo else None),
        **{f"pbo_{f}": figure(r.pbo if r else None) for f, r in ev.pbo_by_family.items()},
        "n_trials": ev.n_trials,
        "n_effective_trials": round(ev.n_effective, 2),
        "is_argmax_strategy": str(argmax.get("best_strategy")),
        "is_argmax_oos_sharpe": figure(argmax.get("best_oos_sharpe", argmax.get("best_sharpe"))),
        "trials_stored": stored,
        "trials_dry_run": bool(dry_run),
        **{f"trials_{k}": v for k, v in counts.as_dict().items()},
        "overfitting_warning": "; ".join(warnings) or "none",
        "top_results": markdown_table(
            preview.to_dicts(), [c for c in PREVIEW_COLUMNS if c in preview.columns]
        ),
    }


def walk_forward_metadata(wf: WalkForward) -> dict[str, Plain]:
    """The stitched out-of-sample result of the walk-forward and its folds."""
    return {
        "walk_forward_oos_sharpe": figure(wf.sharpe),
        "walk_forward_oos_return": figure(wf.total_return),
        "walk_forward_folds": markdown_table(wf.folds, list(FOLD_COLUMNS)),
    }


def recommendations_report(store: TrialStore, concept: str) -> dict[str, Plain]:
    """`strategy_recommendations`: the top three robust sets per family with their review
    status, charts of the latest sweep, and trial counts by status. Raises ValueError naming
    the fix when no trial of ``concept`` is stored."""
    df = store.frame(concept)
    if df.height == 0:
        raise ValueError(
            f"no trials stored for concept {concept!r} under {store.root}: materialize "
            "backtest_results for it first"
        )
    rows: list[dict] = []
    status: dict[str, Plain] = {}
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
                         "id": r["id"][:SHORT_ID]})  # fmt: skip
    summary = store.sweep(concept) or {}
    latest = df.filter(pl.col("sweep_id") == summary["sweep_id"]) if summary else df
    picked = latest["id"].str.slice(0, SHORT_ID).is_in([r["id"] for r in rows]).to_numpy()
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
    return {
        "recommendations": markdown_table(rows, list(REC_COLUMNS)),
        "dsr_vs_is_sharpe": Markdown(png_markdown(scatter, "DSR vs in-sample Sharpe")),
        "pbo_lambda_histogram": Markdown(png_markdown(hist, "PBO lambda histogram")),
        "pbo": figure(summary.get("pbo")),
        "trials": df.height,
        "trials_in_latest_sweep": latest.height,
        **{f"trials_{s}": int((df["status"] == s).sum()) for s in STATUSES},
        **{f"status_changes_to_{k}": int(v) for k, v in changes.items()},
        **status,
    }
