"""daily_ops_report on a real instance: whichever strategy family wins, a Sharpe ratio that is
not finite, and recrawls that are not new concepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetMaterialization, DagsterInstance, DagsterRunStatus, materialize
from dagster._core.test_utils import create_run_for_test

from qpipe_dagster.defs import operations
from qpipe_dagster.ops.report import (
    InboxStats,
    best_from_metadata,
    build_report,
    cap_warnings,
    latest_bests,
    metric_value,
)


@pytest.fixture
def instance(dagster_home: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("QSTASH_DAILY_LIMIT", "QPIPE_INBOX_URL", "QPIPE_INBOX_PATH"):
        monkeypatch.delenv(name, raising=False)
    with DagsterInstance.get() as inst:
        yield inst


def test_report_names_any_winning_family_survives_na_sharpe_and_ignores_recrawls(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_CONCEPTS_PER_DAY", "1")
    for concept, trigger in (("btc-halving", "recrawl"), ("eth-merge", "recrawl")):
        create_run_for_test(
            instance,
            job_name="concept_pipeline",
            status=DagsterRunStatus.SUCCESS,
            tags={"dagster/partition": concept, "qpipe/trigger": trigger},
        )
    for slug, md in (
        ("btc-halving", {"best_sharpe": 1.2, "best_total_return": 0.3,
                         "best_strategy": "rsi window=14 lower=30 upper=70"}),
        ("eth-merge", {"best_sharpe": "n/a", "best_total_return": 0.0,
                       "best_strategy": "bollinger window=20 k=2.0"}),
        ("sol-etf", {"best_sharpe": 0.5, "best_total_return": 0.1, "best_fast": 5,
                     "best_slow": 20}),  # an older run: only the MA pair was stored
    ):  # fmt: skip
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key="backtest_results", partition=slug, metadata=md)
        )
    result = materialize(operations.OPERATIONS_ASSETS, instance=instance)
    assert result.success  # old: float("n/a") crashed the asset
    mat = result.asset_materializations_for_node("daily_ops_report")[0]
    report = mat.metadata["json"].value
    assert [(b["concept"], b["best_sharpe"], b["strategy"]) for b in report["top_backtests"]] == [
        ("btc-halving", 1.2, "rsi window=14 lower=30 upper=70"),
        ("sol-etf", 0.5, "ma_crossover fast=5 slow=20"),
        ("eth-merge", None, "bollinger window=20 k=2.0"),  # not finite: last, shown as n/a
    ]
    # two recrawls of known concepts are not new concepts: no false OVER CAP
    assert report["caps"]["MAX_CONCEPTS_PER_DAY"] == {
        "used": 0,
        "limit": 1,
        "percent": 0.0,
        "over": False,
    }
    text = mat.metadata["report"].value
    assert "OVER CAP" not in text
    assert "| eth-merge | n/a | 0.00% | bollinger window=20 k=2.0 |" in text
    assert "| btc-halving | 1.200 | 30.00% | rsi window=14 lower=30 upper=70 |" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), (2, 2.0), ("0.25", 0.25), ("n/a", None), (float("nan"), None),
     (float("inf"), None), (None, None), (True, None)],
)  # fmt: skip
def test_metric_values_are_finite_floats_or_none(value: object, expected: float | None) -> None:
    assert metric_value(value) == expected


def test_a_materialization_without_a_best_set_is_skipped() -> None:
    assert best_from_metadata("x", {"parameter_sets": 10}) is None


def test_latest_bests_keeps_each_concepts_newest_best_set() -> None:
    newest_first = [
        ("btc", {"best_sharpe": 2.0, "best_strategy": "rsi window=14 lower=30 upper=70"}),
        ("eth", {"parameter_sets": 10}),  # no best set: the older one stands in
        ("btc", {"best_sharpe": 1.0, "best_strategy": "older"}),
        ("eth", {"best_sharpe": 0.5, "best_strategy": "bollinger window=20 k=2.0"}),
    ]
    assert [(b.concept, b.best_sharpe, b.strategy) for b in latest_bests(newest_first)] == [
        ("btc", 2.0, "rsi window=14 lower=30 upper=70"),
        ("eth", 0.5, "bollinger window=20 k=2.0"),
    ]


def test_cap_warnings_name_only_the_caps_reached() -> None:
    report = build_report(
        day="2026-03-01",
        runs=[],
        inbox=InboxStats(received=3, deliveries=5),
        backtests=[],
        max_concepts_per_day=4,
        qstash_daily_limit=5,
        new_concepts_today=2,
    )
    assert cap_warnings(report) == ["QSTASH_DAILY_LIMIT reached: 5 / 5"]
