"""Dagster retries transient errors only: real runs in a real instance, with the pipeline's own
RetryPolicy (delay shortened) around assets wrapped like the concept assets."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    RetryPolicy,
    asset,
    define_asset_job,
)

from qpipe_dagster.definitions import defs
from qpipe_dagster.defs.retries import TRANSIENT_RETRY_POLICY, transient_only

FAST = RetryPolicy(max_retries=TRANSIENT_RETRY_POLICY.max_retries, delay=0)
attempts: dict[str, int] = {}


@asset
@transient_only
def flaky_store() -> int:
    """Refused twice (a store restarting), then through."""
    attempts["flaky_store"] = attempts.get("flaky_store", 0) + 1
    if attempts["flaky_store"] <= 2:
        raise ConnectionRefusedError(111, "Connection refused")
    return 1


@asset
@transient_only
def bad_input() -> int:
    attempts["bad_input"] = attempts.get("bad_input", 0) + 1
    raise ValueError("seed URL 'ftp://x' is not http(s)")


@asset
@transient_only
def generator_asset():
    attempts["generator_asset"] = attempts.get("generator_asset", 0) + 1
    if attempts["generator_asset"] == 1:
        raise TimeoutError("read timed out")
    from dagster import Output

    yield Output(2)


def _retries(result, step: str) -> int:
    return sum(
        1
        for e in result.all_events
        if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == step
    )


@pytest.fixture
def instance(dagster_home: Path):
    attempts.clear()
    with DagsterInstance.get() as inst:
        yield inst


def _run(instance: DagsterInstance, *assets):
    job = Definitions(
        assets=list(assets), jobs=[define_asset_job("j", op_retry_policy=FAST)]
    ).resolve_job_def("j")
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_transient_errors_are_retried_until_through(instance: DagsterInstance) -> None:
    result = _run(instance, flaky_store, generator_asset)
    assert result.success
    assert _retries(result, "flaky_store") == 2 and attempts["flaky_store"] == 3
    assert _retries(result, "generator_asset") == 1


def test_bad_input_fails_once_with_its_own_message(instance: DagsterInstance) -> None:
    result = _run(instance, bad_input)
    assert not result.success
    assert _retries(result, "bad_input") == 0 and attempts["bad_input"] == 1
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "ValueError: seed URL 'ftp://x' is not http(s)" in (
        failure.step_failure_data.user_failure_data.description
    )


def test_concept_pipeline_does_not_retry_a_bad_config(
    dagster_home: Path, instance: DagsterInstance
) -> None:
    """The real job and asset: a bad extra seed URL is a Failure the policy must not retry."""
    from qpipe_dagster.concepts import Concept, ConceptRegistry

    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("c", ["https://example.com/a"])
    )
    instance.add_dynamic_partitions("concepts", ["c"])
    job = defs.resolve_job_def("concept_pipeline")
    assert job.op_retry_policy == TRANSIENT_RETRY_POLICY
    result = job.execute_in_process(
        partition_key="c",
        instance=instance,
        asset_selection=[AssetKey("crawled_pages")],
        run_config={"ops": {"crawled_pages": {"config": {"extra_seed_urls": ["ftp://x/y"]}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert _retries(result, "crawled_pages") == 0
