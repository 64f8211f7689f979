"""Local runs forked from the warm worker, the default launcher when it cannot take a run.

The run keeps the tag ``qpipe/warm_worker`` = ``PID@HOST:CREATED`` (the run worker's identity),
which gives what the default launcher lacks for local runs: ``terminate`` signals that process,
and ``check_run_worker_health`` tells run monitoring when it died without finishing the run
(killed, out of memory), so the run is marked failed instead of staying STARTED.
"""

from __future__ import annotations

import os
import signal
import socket

from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.events import EngineEventData
from dagster._core.launcher import (
    CheckRunHealthResult,
    DefaultRunLauncher,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._serdes import serialize_value

from qpipe_dagster.launcher.warm.client import Forked, WarmWorkerError, fork_run

WARM_TAG = "qpipe/warm_worker"
COLD_REASON_TAG = "qpipe/warm_worker_skipped"


def worker_tag(pid: int, created: float) -> str:
    return f"{pid}@{socket.gethostname()}:{created:.3f}"


def parse_worker_tag(value: str) -> tuple[int, str, float] | None:
    """(pid, host, created) from a ``qpipe/warm_worker`` tag, or None when it is not one."""
    try:
        pid_host, created = value.rsplit(":", 1)
        pid, host = pid_host.split("@", 1)
        return int(pid), host, float(created)
    except ValueError:
        return None


def worker_alive(pid: int, created: float) -> bool:
    """The process ``pid`` exists, is the one created at ``created`` and has not exited."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class WarmRunLauncher(RunLauncher):
    """Forks local runs from the warm worker; falls back to ``DefaultRunLauncher`` per run."""

    def __init__(self, idle_timeout: float = 600.0, start_timeout: float = 180.0) -> None:
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self._cold: DefaultRunLauncher | None = None
        super().__init__()

    @property
    def cold(self) -> DefaultRunLauncher:
        if self._cold is None:
            self._cold = DefaultRunLauncher()
            self._cold.register_instance(self._instance)
        return self._cold

    def _fork(self, run: DagsterRun) -> Forked:
        """Fork the run from the warm worker, or raise WarmWorkerError."""
        origin = run.job_code_origin
        pointer = origin.repository_origin.code_pointer if origin else None
        if origin is None or not isinstance(pointer, ModuleCodePointer):
            raise WarmWorkerError("the run's code location is not a Python module")
        return fork_run(
            run.run_id,
            serialize_value(self._instance.get_ref()),
            home=self._instance.root_directory,
            module=pointer.module,
            executable=origin.executable_path,
            cwd=pointer.working_directory or os.getcwd(),
            idle_timeout=self.idle_timeout,
            start_timeout=self.start_timeout,
        )

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        try:
            forked = self._fork(run)
        except (WarmWorkerError, OSError) as exc:
            self._instance.add_run_tags(run.run_id, {COLD_REASON_TAG: str(exc)[:200]})
            self.cold.launch_run(context)
            return
        tag = worker_tag(forked.pid, forked.created)
        self._instance.add_run_tags(run.run_id, {WARM_TAG: tag})
        self._instance.report_engine_event(
            f"Run forked from the warm worker (run worker {tag}).",
            run,
            EngineEventData.in_process(forked.pid),
        )

    def _worker(self, run: DagsterRun | None) -> tuple[int, str, float] | None:
        value = (run.tags if run else {}).get(WARM_TAG)
        return parse_worker_tag(value) if value else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        worker = self._worker(run)
        if run is None or worker is None:
            return self.cold.terminate(run_id)
        pid, host, created = worker
        if host != socket.gethostname() or not worker_alive(pid, created):
            return False
        self._instance.report_run_canceling(run)
        os.kill(pid, signal.SIGTERM)  # the run worker maps it to an interrupt: run CANCELED
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run)
        if worker is None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, msg="cold local run worker: not checked by the launcher"
            )
        pid, host, created = worker
        if host != socket.gethostname():  # another daemon's run: its own monitoring judges it
            # (UNKNOWN would make this one's monitoring mark a healthy run failed)
            return CheckRunHealthResult(WorkerStatus.RUNNING, msg=f"run worker is on {host}")
        if worker_alive(pid, created):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        latest = self._instance.get_run_by_id(run.run_id)
        if latest is not None and latest.status == DagsterRunStatus.SUCCESS:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            msg=f"run worker {pid} (forked from the warm worker) exited without finishing the run",
        )

    def dispose(self) -> None:
        if self._cold is not None:
            self._cold.dispose()

    def join(self, timeout: int = 30) -> None:
        if self._cold is not None:
            self._cold.join(timeout=timeout)
