"""Halt and resume the pipeline's automation against a real instance (SQLite or PostgreSQL).

`halt` stops every running sensor and schedule of the code location (except the alerting
sensor: alerts matter most while halted), cancels queued runs and, with `terminate`, running
ones, and records exactly what it stopped in the instance. `resume` restarts exactly those and
clears the record. The receiver keeps storing deliveries throughout, so nothing is lost: the
QStash sensor picks the messages up once resumed.

The code location is loaded in this process under its workspace name (`qpipe`), so the states
written here are the ones the daemon reads (instigator states are keyed by location, repository
and name).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from qpipe_dagster.controls.state import HaltRecord, clear_halt, read_halt, write_halt

if TYPE_CHECKING:
    from dagster._core.remote_representation.external import RemoteRepository

    from qpipe_dagster.cli.progress import MeterFactory

LOCATION_NAME = "qpipe"  # workspace.yaml and deploy/workspace.yaml
DEFINITIONS_MODULE = "qpipe_dagster.definitions"
KEEP_RUNNING = frozenset({"run_failure_webhook"})  # alerting is never halted
ACTIVE = [
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


class ControlError(RuntimeError):
    """Halt/resume cannot do what was asked; the message says why and what to do."""


@contextmanager
def code_location(instance: DagsterInstance) -> Iterator[RemoteRepository]:
    """The repository of the qpipe code location, loaded in this process."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=DEFINITIONS_MODULE), location_name=LOCATION_NAME
    )
    with origin.create_location(instance) as location:
        (repo,) = location.get_repositories().values()
        yield repo


def _running(instance: DagsterInstance, remote) -> bool:
    stored = instance.get_instigator_state(remote.get_remote_origin_id(), remote.selector_id)
    return remote.get_current_instigator_state(stored).is_running


@dataclass
class HaltResult:
    record: HaltRecord
    already: bool = False


def halt(
    instance: DagsterInstance,
    *,
    reason: str,
    terminate: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
    clock: Callable[[], float] = time.time,
    meter: MeterFactory | None = None,
) -> HaltResult:
    """Stop automation, cancel queued runs (and running ones with `terminate`), record it.

    Halting twice keeps the first record (so `resume` still restarts what the first stopped)
    and only cancels what was queued or started since. `meter` (qpipe_dagster.cli.progress)
    counts the cancellations; without it each one is a `progress` line."""
    existing = read_halt(instance)
    stopped_sensors: list[str] = []
    stopped_schedules: list[str] = []
    if existing is None:
        with code_location(instance) as repo:
            for sensor in repo.get_sensors():
                if sensor.name in KEEP_RUNNING or not _running(instance, sensor):
                    continue
                instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
                stopped_sensors.append(sensor.name)
                progress(f"stopped sensor {sensor.name}")
            for schedule in repo.get_schedules():
                if not _running(instance, schedule):
                    continue
                instance.stop_schedule(
                    schedule.get_remote_origin_id(), schedule.selector_id, schedule
                )
                stopped_schedules.append(schedule.name)
                progress(f"stopped schedule {schedule.name}")
    queued = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
    canceled = _cancel(instance, queued, progress, meter, "canceling queued runs")
    terminated = _cancel(instance, ACTIVE, progress, meter, "terminating runs") if terminate else []
    if existing is not None:
        record = HaltRecord(
            reason=existing.reason,
            halted_at=existing.halted_at,
            by=existing.by,
            stopped_sensors=existing.stopped_sensors,
            stopped_schedules=existing.stopped_schedules,
            canceled_runs=[*existing.canceled_runs, *canceled],
            terminated_runs=[*existing.terminated_runs, *terminated],
        )
    else:
        record = HaltRecord(
            reason=reason,
            halted_at=clock(),
            by=f"{getpass.getuser()}@{socket.gethostname()}",
            stopped_sensors=stopped_sensors,
            stopped_schedules=stopped_schedules,
            canceled_runs=canceled,
            terminated_runs=terminated,
        )
    write_halt(instance, record)
    return HaltResult(record, already=existing is not None)


def _cancel(
    instance: DagsterInstance,
    statuses: list[DagsterRunStatus],
    progress: Callable[[str], None],
    meter: MeterFactory | None = None,
    what_for: str = "",
) -> list[str]:
    """Cancel the runs in `statuses`; returns the ids that were canceled. A running run whose
    launcher cannot reach its worker (e.g. one started from a terminal with `dagster job
    execute`) is named, not counted: it keeps running until it ends or is killed by hand."""
    runs = instance.get_runs(RunsFilter(statuses=statuses))
    done: list[str] = []
    counter = meter(total=len(runs), desc=what_for, unit="run") if meter and runs else None
    for i, run in enumerate(runs, 1):
        if run.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED):
            instance.report_run_canceled(run, message="canceled by `qpipe halt`")
            ok = True
        else:
            # the coordinator asks the launcher to stop the run worker (its steps die with it)
            ok = bool(instance.run_coordinator.cancel_run(run.run_id))
        what = run.status.value.lower()
        note = f"canceled {what} run {run.run_id}"
        if ok:
            done.append(run.run_id)
        else:
            note = (
                f"could not terminate {what} run {run.run_id}: its launcher cannot reach the run"
                " worker (the run shows CANCELING until run monitoring's cancel timeout fails"
                " it); if it is still working, kill its process by hand"
            )
        if counter is None:
            progress(f"[{i}/{len(runs)}] {note}")
            continue
        if not ok:  # a failure is a line of its own, never only a bar's postfix
            counter.write(f"[{i}/{len(runs)}] {note}")
        counter.advance(note=note if ok else "")
    if counter is not None:
        counter.close()
    return done


@dataclass
class ResumeResult:
    record: HaltRecord | None
    started_sensors: list[str] = field(default_factory=list)
    started_schedules: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # stopped, but no longer defined


def resume(
    instance: DagsterInstance, progress: Callable[[str], None] = lambda _m: None
) -> ResumeResult:
    """Restart exactly what the halt stopped, then clear the record (not halted: nothing)."""
    record = read_halt(instance)
    if record is None:
        return ResumeResult(None)
    result = ResumeResult(record)
    with code_location(instance) as repo:
        sensors = {s.name: s for s in repo.get_sensors()}
        schedules = {s.name: s for s in repo.get_schedules()}
        for name in record.stopped_sensors:
            if name not in sensors:
                result.missing.append(f"sensor {name}")
                continue
            instance.start_sensor(sensors[name])
            result.started_sensors.append(name)
            progress(f"started sensor {name}")
        for name in record.stopped_schedules:
            if name not in schedules:
                result.missing.append(f"schedule {name}")
                continue
            instance.start_schedule(schedules[name])
            result.started_schedules.append(name)
            progress(f"started schedule {name}")
    clear_halt(instance)
    return result


def automation_states(instance: DagsterInstance) -> dict[str, dict[str, bool]]:
    """{'sensors': {name: running}, 'schedules': {name: running}} as the daemon sees them."""
    with code_location(instance) as repo:
        return {
            "sensors": {s.name: _running(instance, s) for s in repo.get_sensors()},
            "schedules": {s.name: _running(instance, s) for s in repo.get_schedules()},
        }
