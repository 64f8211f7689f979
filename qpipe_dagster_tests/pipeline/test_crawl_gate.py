"""A crawl that fetched nothing fails the run, saying why, instead of a green run with 0 pages.

Real crawl (Scrapy in its Pipes child process) of the demo site on 127.0.0.1, refused by
QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse, in a real (SQLite) Dagster instance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster.definitions import defs


def _failure_text(result) -> str:
    parts = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None:
            parts.append(data.user_failure_data.description or "")
        error = data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
    return " | ".join(parts)


@pytest.mark.slow
def test_refused_crawl_fails_the_run_naming_the_reason(
    dagster_home: Path, demo_site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = demo_site
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("refused", seed_urls=[base + "index.html"])
    )
    monkeypatch.setenv("QPIPE_CRAWL_PRIVATE_ADDRESSES", "refuse")
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["refused"])
        result = defs.resolve_job_def("concept_pipeline").execute_in_process(
            partition_key="refused",
            instance=instance,
            asset_selection=[AssetKey("crawled_pages"), AssetKey("parsed_pages")],
            run_config={"ops": {"crawled_pages": {"config": {"retries": 0, "max_depth": 0}}}},
            raise_on_error=False,
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE
        text = _failure_text(result)
        assert "crawl_not_empty" in text and "no page was fetched" in text, text
        assert "127.0.0.1 is a loopback address" in text, text
        assert "QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse" in text, text
        # the check's failure is recorded against the asset, and nothing downstream ran
        evaluation = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert [(c.check_name, c.passed) for c in evaluation] == [("crawl_not_empty", False)]
        parsed = [e for e in result.all_events if e.step_key == "parsed_pages"]
        assert not any(e.is_step_success for e in parsed)
        assert instance.get_latest_materialization_event(AssetKey("parsed_pages")) is None


def test_empty_crawl_reason_lists_the_commonest_errors() -> None:
    import pyarrow as pa

    from qpipe_dagster.crawl.schema import empty_crawl_reason

    table = pa.table({"url": ["a", "b", "c", "d"], "error": ["x", "y", "x", "z"]})
    assert empty_crawl_reason(table, examples=2) == (
        "no page was fetched: 4 URLs requested, 2 x x; 1 x y (and 1 other errors)"
    )
    assert "requested no URL" in empty_crawl_reason(table.slice(0, 0))
