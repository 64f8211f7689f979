"""Trial ingest counts and review decisions reach the metrics endpoint's collector."""

from __future__ import annotations

from dagster import AssetKey, AssetMaterialization, DagsterInstance

from qpipe_dagster.monitoring.collector import PipelineCollector
from qpipe_dagster.trials.store import TrialStore
from qpipe_dagster_tests.trials.conftest import NOW


def test_ingest_counts_and_status_changes_are_metrics(dagster_home, trial_run) -> None:
    store = TrialStore()
    store.ingest(trial_run.trials, now=NOW)
    first = trial_run.trials.column("id")[0].as_py()
    store.set_status(first, "rejected", reason="noise", actor="alice", now=NOW)
    with DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(
                AssetKey("backtest_results"),
                partition="demo",
                metadata={
                    "backend": "cpu",
                    "parameter_sets": 77,
                    "compute_seconds": 1.0,
                    "trials_inserted": 70,
                    "trials_skipped": 7,
                    "trials_error": 0,
                },
            )
        )
        collector = PipelineCollector(instance, clock=NOW.timestamp)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in collector.collect()
            for s in family.samples
        }
    assert samples[("qpipe_trials_ingested_total", (("action", "inserted"),))] == 70
    assert samples[("qpipe_trials_ingested_total", (("action", "skipped"),))] == 7
    assert samples[("qpipe_trial_status_changes_total", (("to_status", "rejected"),))] == 1
    assert samples[("qpipe_trial_status_changes_total", (("to_status", "promoted"),))] == 0
