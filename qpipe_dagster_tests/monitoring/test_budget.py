"""Per-concept budgets fail the run naming the budget: a real crawl (Scrapy in its Pipes child
process) of the demo site on 127.0.0.1 in a real SQLite instance. What a step stored before
the budget stopped the run is kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster.controls.budget import Budget, BudgetExceeded
from qpipe_dagster.definitions import defs
from qpipe_dagster.settings import SettingError
from qpipe_dagster_tests.pipeline.test_crawl_gate import _failure_text


def _crawl(dagster_home: Path, base: str, max_pages: int):
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("budgeted", seed_urls=[base + "index.html"])
    )
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["budgeted"])
        result = defs.resolve_job_def("concept_pipeline").execute_in_process(
            partition_key="budgeted",
            instance=instance,
            asset_selection=[AssetKey("crawled_pages"), AssetKey("parsed_pages")],
            run_config={"ops": {"crawled_pages": {"config": {"max_pages": max_pages}}}},
            raise_on_error=False,
        )
        stored = instance.get_latest_materialization_event(AssetKey("crawled_pages"))
        parsed = instance.get_latest_materialization_event(AssetKey("parsed_pages"))
    return result, stored, parsed


@pytest.mark.slow
def test_a_crawl_over_the_page_budget_is_refused_before_any_fetch(
    dagster_home: Path, demo_site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QPIPE_BUDGET_MAX_PAGES", "5")
    result, stored, parsed = _crawl(dagster_home, demo_site[0], max_pages=10)
    assert not result.success
    assert (
        "concept 'budgeted': crawl max_pages=10 is over the per-concept budget"
        " QPIPE_BUDGET_MAX_PAGES=5: lower max_pages in the run config or raise"
        " QPIPE_BUDGET_MAX_PAGES"
    ) in _failure_text(result)
    assert stored is None and parsed is None


@pytest.mark.slow
def test_a_run_over_the_compute_budget_fails_keeping_what_was_stored(
    dagster_home: Path, demo_site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QPIPE_BUDGET_MAX_COMPUTE_S", "1")  # a real crawl takes longer
    result, stored, parsed = _crawl(dagster_home, demo_site[0], max_pages=20)
    assert not result.success
    text = _failure_text(result)
    assert "concept 'budgeted': the run has spent" in text, text
    assert (
        "by the end of crawled_pages, over the per-concept budget QPIPE_BUDGET_MAX_COMPUTE_S=1;"
        " what crawled_pages and earlier steps stored is kept"
    ) in text
    assert stored is not None  # the crawl is kept: a retry with a larger budget starts there
    assert parsed is None  # nothing after the budget ran


def test_budget_settings_are_checked_naming_the_variable() -> None:
    assert Budget.from_env({}) == Budget(500, 3600)
    assert Budget.from_env({"QPIPE_BUDGET_MAX_PAGES": " 50 "}).max_pages == 50
    with pytest.raises(SettingError, match=r"QPIPE_BUDGET_MAX_COMPUTE_S='0' is invalid"):
        Budget.from_env({"QPIPE_BUDGET_MAX_COMPUTE_S": "0"})
    with pytest.raises(BudgetExceeded, match="201 pages crawled, over the per-concept budget"):
        Budget(max_pages=200).check_pages("c", 200, crawled=201)
