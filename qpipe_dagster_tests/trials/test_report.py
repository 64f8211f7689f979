"""What the trial assets report, from plain trial runs and a real trial store (no Dagster)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from qpipe_dagster.metadata import Markdown
from qpipe_dagster.trials.pipeline import TrialRun, store_trials
from qpipe_dagster.trials.report import (
    overfitting_warnings,
    recommendations_report,
    trial_metadata,
    walk_forward_metadata,
)
from qpipe_dagster.trials.store import IngestCounts, TrialStore
from qpipe_dagster.trials.walkforward import WalkForward


def _with(run: TrialRun, *, pbo: float = 0.1, status: str = "ok", robust: bool = True,
          reasons: tuple[str, ...] = ()) -> TrialRun:  # fmt: skip
    """The run with its PBO, pick status and robustness set (the rest of the evidence kept)."""
    assert run.evidence.pbo is not None
    evidence = replace(run.evidence, pbo=replace(run.evidence.pbo, pbo=pbo))
    pick = replace(run.pick, status=status, reasons=list(reasons))
    return replace(run, evidence=evidence, pick=pick, robust=robust)


def test_warnings_follow_the_evidence(trial_run) -> None:
    assert overfitting_warnings(_with(trial_run)) == []
    [pbo] = overfitting_warnings(_with(trial_run, pbo=0.75))
    assert pbo.startswith("PBO 0.75 > 0.5: the in-sample best set ranks below the median")
    degraded = _with(trial_run, status="degraded", reasons=("relaxed min_trades 10 -> 5",))
    assert overfitting_warnings(degraded) == [
        "the best set passed only relaxed filters (relaxed min_trades 10 -> 5)"
    ]
    [luck] = overfitting_warnings(_with(trial_run, robust=False))
    assert luck.startswith("no set passed the recommend filters even relaxed (best set's DSR ")
    assert luck.endswith(" across the sweep): its in-sample result is likely luck")


def test_trial_metadata_sets_the_best_against_the_argmax(trial_run) -> None:
    argmax = {"best_strategy": "ma_crossover fast=2 slow=10", "best_oos_sharpe": float("nan")}
    md = trial_metadata(
        _with(trial_run), IngestCounts(inserted=7), 3, argmax=argmax, preview_rows=2, dry_run=False,
        warnings=["w1", "w2"],
    )  # fmt: skip
    assert md["best_trial_id"] == trial_run.best_id and md["recommend_status"] == "ok"
    assert md["is_argmax_strategy"] == "ma_crossover fast=2 slow=10"
    assert md["is_argmax_oos_sharpe"] == "n/a"  # not finite: shown as n/a
    assert md["trials_inserted"] == 7 and md["trials_stored"] == 3
    assert md["overfitting_warning"] == "w1; w2"
    assert isinstance(md["top_results"], Markdown)
    assert md["top_results"].startswith("| label | is_sharpe | oos_sharpe |")
    assert md["top_results"].count("\n") == 4  # header, rule, two rows
    assert list(md)[-2:] == ["overfitting_warning", "top_results"]
    no_robust = trial_metadata(
        _with(trial_run, robust=False), IngestCounts(), 0, argmax={}, preview_rows=1,
        dry_run=True, warnings=[],
    )  # fmt: skip
    assert no_robust["recommend_status"] == "none (best plateau shown)"
    assert no_robust["overfitting_warning"] == "none" and no_robust["trials_dry_run"] is True


def test_walk_forward_metadata() -> None:
    wf = WalkForward([{"fold": 0, "is_bars": 70, "oos_bars": 30, "chosen": "x", "oos_sharpe": 1.0,
                       "oos_return": 0.1}], np.ones(30), 0, float("inf"), 0.1)  # fmt: skip
    md = walk_forward_metadata(wf)
    assert md["walk_forward_oos_sharpe"] == "n/a" and md["walk_forward_oos_return"] == 0.1
    assert "| 0 | 70 | 30 | x | 1.0000 | 0.1000 |" in md["walk_forward_folds"]


def test_recommendations_report_from_the_store(trial_run, tmp_path) -> None:
    store = TrialStore(tmp_path / "trials")
    with pytest.raises(ValueError, match=r"no trials stored for concept 'demo' under .*: materia"):
        recommendations_report(store, "demo")
    store_trials(trial_run, store, top_n=0)
    md = recommendations_report(store, "demo")
    assert md["recommendations"].startswith("| family | status | label | score |")
    for key in ("recommendations", "dsr_vs_is_sharpe", "pbo_lambda_histogram"):
        assert isinstance(md[key], Markdown)
    assert "data:image/png;base64," in md["pbo_lambda_histogram"]
    n = trial_run.trials.num_rows
    assert md["trials"] == md["trials_in_latest_sweep"] == md["trials_candidate"] == n
    assert md["status_ma_crossover"] in ("ok", "degraded") and "status_rsi" not in md
