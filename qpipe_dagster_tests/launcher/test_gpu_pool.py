"""The GPU limit holds for backtest steps only: concept runs overlap, GPU-pool steps take turns.

`granularity: run` made every run with a `gpu`-pool step wait in the queue for the previous
one (ten concepts ran strictly one after another, GPU or not). Real instance from the shipped
dagster.yaml, the real queue daemon iteration and the real launcher (run workers in their own
processes); two runs submitted together.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from qpipe_dagster_tests.launcher.pool_defs import defs

DEFS_FILE = Path(__file__).with_name("pool_defs.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _interval(path: Path) -> tuple[float, float]:
    start, end = (float(x) for x in path.read_text().split())
    return start, end


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_pipeline_gpu_step_is_in_the_gpu_pool_and_not_a_root() -> None:
    """Op granularity never holds a run in the queue for a non-root step (Dagster counts root
    steps' pools at dequeue); backtest_results depends on market_prices, so it never does."""
    from qpipe_dagster.definitions import defs as qpipe_defs

    job = qpipe_defs.resolve_job_def("concept_pipeline")
    node = job.graph.node_named("backtest_results")
    assert node.definition.pool == "gpu"
    assert job.graph.dependency_structure.all_upstream_outputs_from_node("backtest_results")


@pytest.mark.slow
def test_runs_overlap_and_only_gpu_steps_wait(
    dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = tmp_path / "times"
    times.mkdir()
    monkeypatch.setenv("QPIPE_TEST_TIMES_DIR", str(times))
    with DagsterInstance.get() as instance:  # the shipped dagster.yaml (the fixture copies it)
        target = PythonFileTarget(
            python_file=str(DEFS_FILE),
            attribute="defs",
            working_directory=str(REPO_ROOT),
            location_name="pool_test",
        )
        with WorkspaceProcessContext(instance, target) as ctx:
            workspace = ctx.create_request_context()
            location = workspace.get_code_location("pool_test")
            remote = location.get_repository("__repository__").get_full_job("pipeline")
            run_ids = []
            for _ in range(2):
                run = instance.create_run_for_job(
                    job_def=defs.resolve_job_def("pipeline"),
                    remote_job_origin=remote.get_remote_origin(),
                    job_code_origin=remote.get_python_origin(),
                )
                instance.submit_run(run.run_id, workspace)
                run_ids.append(run.run_id)
            daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                list(daemon.run_iteration(ctx))
                runs = [instance.get_run_by_id(r) for r in run_ids]
                if all(r is not None and r.is_finished for r in runs):
                    break
                time.sleep(0.5)
            runs = [instance.get_run_by_id(r) for r in run_ids]
            assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 2, [
                (r.run_id, r.status) for r in runs
            ]
    preps = [_interval(times / f"{r}.prep") for r in run_ids]
    sweeps = [_interval(times / f"{r}.sweep") for r in run_ids]
    records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
    spans = [(records[r].start_time, records[r].end_time) for r in run_ids]
    assert _overlap(*spans), f"runs did not overlap: {spans}"
    assert not _overlap(*sweeps), f"GPU-pool steps overlapped: {sweeps}"
    # Old (run granularity): the second run was dequeued only once the first one's GPU step had
    # released the pool, so its CPU step always began after that. Now it runs meanwhile (the
    # GPU step lasts 8 s, longer than run workers start apart on a busy machine).
    first, second = sorted(range(2), key=lambda i: sweeps[i][0])
    assert preps[second][0] < sweeps[first][1], (
        f"the second run's CPU step {preps[second]} waited for the first run's GPU step "
        f"{sweeps[first]}"
    )
    pools = instance.get_concurrency_config().pool_config
    assert pools.pool_granularity.value == "op" and pools.default_pool_limit == 1
