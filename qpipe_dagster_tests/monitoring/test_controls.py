"""`qpipe halt`, `resume` and `status` against real instances: the local SQLite one `make run`
uses and deploy/dagster.prod.yaml on a throwaway PostgreSQL cluster.

The code location is the real one (qpipe_dagster.definitions); what halt stopped is read back
the way the daemon reads it (stored instigator state by selector), from a fresh load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from qpipe_dagster.cli import main
from qpipe_dagster.controls.halt import automation_states, code_location
from qpipe_dagster_tests.cli.terminal import run_on_terminal
from qpipe_dagster_tests.ops.prod_instance import use_prod_instance
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
)

AUTOMATION = {
    "sensors": {"qstash_inbox_sensor", "run_failure_webhook"},
    "schedules": {
        "recrawl_schedule",
        "nightly_backup_schedule",
        "daily_report_schedule",
        "inbox_housekeeping_schedule",
    },
}


@pytest.fixture(params=["sqlite", "postgres"])
def instance_home(request, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if request.param == "postgres":
        use_prod_instance(monkeypatch, dagster_home, request.getfixturevalue("postgres_cluster"))
    return dagster_home


def _queued_run(instance: DagsterInstance) -> str:
    """A run waiting in the queue, as the QueuedRunCoordinator stores a submitted one."""
    run_id = make_new_run_id()
    with code_location(instance) as repo:
        origin = repo.get_full_job("concept_pipeline").get_remote_origin()
    instance.add_run(
        DagsterRun(
            job_name="concept_pipeline",
            run_id=run_id,
            status=DagsterRunStatus.QUEUED,
            remote_job_origin=origin,
        )
    )
    return run_id


def test_halt_stops_automation_cancels_queued_runs_and_resume_restarts_exactly_that(
    instance_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DagsterInstance.get() as instance:
        states = automation_states(instance)
        assert {k: set(v) for k, v in states.items()} == AUTOMATION
        assert all(states["sensors"].values()) and all(states["schedules"].values())
        # stopped by hand before the halt: resume must leave it stopped
        with code_location(instance) as repo:
            recrawl = repo.get_schedule("recrawl_schedule")
            instance.stop_schedule(recrawl.get_remote_origin_id(), recrawl.selector_id, recrawl)
        queued = _queued_run(instance)

    assert main(["halt", "--reason", "vendor outage"]) == 0
    out = capsys.readouterr().out
    assert "halted: vendor outage. Stopped qstash_inbox_sensor, daily_report_schedule," in out
    assert "canceled 1 queued run(s)" in out

    with DagsterInstance.get() as instance:
        states = automation_states(instance)
        assert states["sensors"] == {"qstash_inbox_sensor": False, "run_failure_webhook": True}
        assert not any(states["schedules"].values())
        assert instance.get_run_by_id(queued).status == DagsterRunStatus.CANCELED
        second = _queued_run(instance)

    # halting again keeps the first record (resume must still know what the first stopped)
    assert main(["halt", "--reason", "second thoughts"]) == 0
    assert "already halted" in capsys.readouterr().err

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["halt"]["halted"] is True
    assert status["halt"]["reason"] == "vendor outage"
    assert sorted(status["halt"]["stopped"]) == [
        "daily_report_schedule",
        "inbox_housekeeping_schedule",
        "nightly_backup_schedule",
        "qstash_inbox_sensor",
    ]
    assert status["runs"]["queued"] == 0

    assert main(["status"]) == 0
    screen = capsys.readouterr().out
    assert "halted    YES since" in screen and ": vendor outage" in screen

    assert main(["resume"]) == 0
    assert (
        "resumed: started qstash_inbox_sensor, daily_report_schedule,"
        " inbox_housekeeping_schedule, nightly_backup_schedule\n" in (capsys.readouterr().out)
    )
    with DagsterInstance.get() as instance:
        states = automation_states(instance)
        assert states["sensors"] == {"qstash_inbox_sensor": True, "run_failure_webhook": True}
        assert states["schedules"] == {
            "recrawl_schedule": False,  # stopped before the halt: still stopped
            "nightly_backup_schedule": True,
            "daily_report_schedule": True,
            "inbox_housekeeping_schedule": True,
        }
        assert instance.get_run_by_id(second).status == DagsterRunStatus.CANCELED
    assert main(["resume"]) == 0
    assert "not halted: nothing to resume" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["halt"] == {"halted": False}


def test_status_names_an_unreadable_part_and_shows_the_rest(
    dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (dagster_home / "qpipe" / "inbox.sqlite").mkdir(parents=True)  # a folder, not a database
    assert main(["status"]) == 0
    screen = capsys.readouterr().out
    assert "  queue     unreadable: OperationalError" in screen
    assert "  runs      0 running, 0 queued" in screen
    assert "  breakers  postgres closed, qstash closed, weaviate closed" in screen


def test_pipeline_runs_carry_a_max_runtime_that_run_monitoring_enforces(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concept_pipeline run started 3 h ago (default limit 2 h) and still STARTED, as a hung
    run is: the daemon's run-monitoring check marks it failed, freeing its slot."""
    import logging
    from datetime import UTC, datetime

    import yaml
    from dagster import DagsterEvent, DagsterEventType
    from dagster._daemon.monitoring.run_monitoring import check_run_timeout

    from qpipe_dagster.defs.jobs import MAX_RUNTIME_TAG, concept_pipeline_job, max_runtime_s
    from qpipe_dagster.settings import SettingError
    from qpipe_dagster_tests.ops.prod_instance import PROD_YAML

    for config in (dagster_home / "dagster.yaml", PROD_YAML):
        assert yaml.safe_load(config.read_text())["run_monitoring"]["enabled"] is True
    assert concept_pipeline_job.tags[MAX_RUNTIME_TAG] == "7200"
    assert max_runtime_s({"QPIPE_MAX_RUNTIME_S": "900"}) == 900
    with pytest.raises(SettingError, match=r"QPIPE_MAX_RUNTIME_S='5' is invalid"):
        max_runtime_s({"QPIPE_MAX_RUNTIME_S": "5"})

    with DagsterInstance.get() as instance:
        run_id = make_new_run_id()
        instance.add_run(
            DagsterRun(
                job_name="concept_pipeline",
                run_id=run_id,
                status=DagsterRunStatus.NOT_STARTED,
                tags=dict(concept_pipeline_job.tags),
            )
        )
        started = datetime.now(UTC).timestamp() - 3 * 3600
        instance.run_storage.handle_run_event(
            run_id,
            DagsterEvent(DagsterEventType.RUN_START.value, "concept_pipeline"),
            datetime.fromtimestamp(started, UTC),
        )
        (record,) = instance.get_run_records()
        check_run_timeout(instance, record, logging.getLogger("test"), 0.0)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


def test_terminate_names_a_running_run_it_cannot_reach(
    dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A STARTED run whose worker the launcher cannot reach (started outside the daemon) is
    named with what to do, not reported as terminated."""
    from datetime import UTC, datetime

    from dagster import DagsterEvent, DagsterEventType

    with DagsterInstance.get() as instance:
        run_id = make_new_run_id()
        instance.add_run(
            DagsterRun(
                job_name="concept_pipeline", run_id=run_id, status=DagsterRunStatus.NOT_STARTED
            )
        )
        instance.run_storage.handle_run_event(
            run_id,
            DagsterEvent(DagsterEventType.RUN_START.value, "concept_pipeline"),
            datetime.now(UTC),
        )
    assert main(["halt", "--terminate", "--reason", "disk full"]) == 0
    captured = capsys.readouterr()
    assert f"could not terminate started run {run_id}: its launcher cannot reach" in captured.err
    assert "terminated 0 running" in captured.out
    with DagsterInstance.get() as instance:
        # Dagster's launcher marks it CANCELING; run monitoring fails it after its timeout
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELING
    assert main(["resume"]) == 0


def test_halt_shows_a_progress_bar_on_a_terminal(dagster_home: Path) -> None:
    """On a terminal the cancellations are a bar with counts and time left (tqdm); piped, the
    same command prints one line per run (the tests above)."""
    import sys

    with DagsterInstance.get() as instance:
        for _ in range(3):
            _queued_run(instance)
    qpipe = str(Path(sys.executable).parent / "qpipe")
    code, text = run_on_terminal([qpipe, "halt", "--reason", "drill"])
    assert code == 0, text
    assert "canceling queued runs" in text and "3/3" in text, text
    assert "[1/3] canceled" not in text  # the bar replaces the per-run lines
    assert "canceled 3 queued run(s)" in text
    assert main(["resume"]) == 0
