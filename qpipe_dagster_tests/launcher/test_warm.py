"""Local runs fork from the warm worker: shared preload, cancellation, crash detection, fallbacks.

Real instance (the shipped dagster.yaml, whose launcher config turns warm workers on), a real
code location loaded as a Python module, the real launcher, the real warm worker process and
real forked run workers; run monitoring's own function judges a run worker killed with -9.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.remote_origin import CodeLocationOrigin
from dagster._core.workspace.context import BaseWorkspaceRequestContext, WorkspaceProcessContext
from dagster._core.workspace.load import location_origin_from_module_name
from dagster._core.workspace.load_target import ModuleTarget, WorkspaceLoadTarget
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from qpipe_dagster.launcher.gpu_router import GpuRoutingRunLauncher
from qpipe_dagster.launcher.warm.client import _connect, code_fingerprint, server_name
from qpipe_dagster.launcher.warm.launcher import COLD_REASON_TAG, WARM_TAG, parse_worker_tag
from qpipe_dagster.launcher.warm.server import Preloaded, Server
from qpipe_dagster.settings import SettingError
from qpipe_dagster_tests.launcher.warm_defs import defs

MODULE = "qpipe_dagster_tests.launcher.warm_defs"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[2]


Site = tuple[DagsterInstance, WorkspaceProcessContext, BaseWorkspaceRequestContext, Path]


@pytest.fixture
def site(dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("QPIPE_TEST_TIMES_DIR", str(out))  # the warm worker inherits it
    target = ModuleTarget(
        module_name=MODULE,
        attribute="defs",
        working_directory=str(REPO_ROOT),
        location_name="warm_test",
    )
    servers: set[int] = set()
    with DagsterInstance.get() as instance, WorkspaceProcessContext(instance, target) as ctx:
        yield instance, ctx, ctx.create_request_context(), out
        for path in out.glob("*.json"):
            servers.add(json.loads(path.read_text())["ppid"])
    for pid in servers - {os.getpid()}:  # the warm workers this test started, nothing else
        with contextlib.suppress(OSError):
            if b"launcher.warm.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)


def _launch(instance: DagsterInstance, workspace: BaseWorkspaceRequestContext, job: str) -> str:
    location = workspace.get_code_location("warm_test")
    remote = location.get_repository("__repository__").get_full_job(job)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def(job),
        remote_job_origin=remote.get_remote_origin(),
        job_code_origin=remote.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def _wait(
    instance: DagsterInstance,
    run_id: str,
    done: Callable[[DagsterRun], bool],
    timeout: float = 120.0,
) -> DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and done(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} stuck at {instance.get_run_by_id(run_id)}")


def _gone(pid: int, timeout: float) -> bool:
    """`pid` exited (or is a zombie waiting for its parent) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def _seen(out: Path, run_id: str) -> dict:
    return json.loads((out / f"{run_id}.json").read_text())


def test_runs_fork_from_one_warm_worker_that_loaded_the_code_once(site: Site) -> None:
    instance, _, workspace, out = site
    run_ids = [_launch(instance, workspace, "where_job") for _ in range(2)]
    runs = [_wait(instance, r, lambda run: run.is_finished) for r in run_ids]
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 2
    seen = [_seen(out, r) for r in run_ids]
    # one warm worker forked both; it ran warm_up once, and each run worker inherited that
    assert seen[0]["ppid"] == seen[1]["ppid"] != os.getpid()
    assert seen[0]["warmed"] == seen[0]["ppid"]
    assert seen[0]["pid"] != seen[1]["pid"]
    for run, saw in zip(runs, seen, strict=True):
        worker = parse_worker_tag(run.tags[WARM_TAG])
        assert worker is not None and worker[0] == saw["pid"] and worker[1] == socket.gethostname()
        assert COLD_REASON_TAG not in run.tags
    # a request it cannot read is answered with an error, and the worker keeps serving
    name = server_name(instance.root_directory, MODULE, code_fingerprint(MODULE))
    sock = _connect(name)
    assert sock is not None
    with sock:
        sock.sendall(b"not json\n")
        assert b"bad request" in sock.recv(4096)
    run = _wait(instance, _launch(instance, workspace, "where_job"), lambda r: r.is_finished)
    assert run.status == DagsterRunStatus.SUCCESS and WARM_TAG in run.tags


def test_terminate_cancels_a_forked_run(site: Site) -> None:
    instance, _, workspace, out = site
    run_id = _launch(instance, workspace, "hold_job")
    _wait(instance, run_id, lambda run: (out / f"{run.run_id}.json").exists())
    pid = _seen(out, run_id)["pid"]
    assert instance.run_launcher.terminate(run_id)
    run = _wait(instance, run_id, lambda r: r.is_finished, timeout=60)
    assert run.status == DagsterRunStatus.CANCELED
    assert _gone(pid, 10)
    assert not instance.run_launcher.terminate(run_id)  # nothing left to stop


def test_a_killed_run_worker_is_marked_failed_by_run_monitoring(site: Site) -> None:
    instance, _, workspace, out = site
    launcher = instance.run_launcher
    assert isinstance(launcher, GpuRoutingRunLauncher) and launcher.supports_check_run_worker_health
    run_id = _launch(instance, workspace, "crash_job")
    _wait(instance, run_id, lambda run: (out / f"{run.run_id}.json").exists())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if launcher.check_run_worker_health(run).status.value == "FAILED":
            break
        time.sleep(0.2)
    record = instance.get_run_records()[0]
    assert record.dagster_run.run_id == run_id and record.dagster_run.status.value == "STARTED"
    monitor_started_run(instance, workspace, record, logging.getLogger("test"))
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    failure = [e for e in instance.all_logs(run_id) if e.is_dagster_event and
               e.dagster_event.event_type_value == "PIPELINE_FAILURE"]  # fmt: skip
    assert "exited without finishing the run" in (failure[-1].message or "")


def test_switched_off_every_run_starts_cold(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    instance, _, workspace, out = site
    monkeypatch.setenv("QPIPE_WARM_WORKERS", "OFF")
    with DagsterInstance.get() as switched_off:  # the same dagster.yaml, loaded with the switch
        launcher = switched_off.run_launcher
        assert isinstance(launcher, GpuRoutingRunLauncher) and launcher.warm_config is None
        assert not launcher.supports_check_run_worker_health
        run_id = _launch(switched_off, workspace, "where_job")
    run = _wait(instance, run_id, lambda r: r.is_finished)
    assert run.status == DagsterRunStatus.SUCCESS and WARM_TAG not in run.tags
    assert _seen(out, run.run_id)["warmed"] is None  # a fresh interpreter: no warm_up ran


class _OtherPython(WorkspaceLoadTarget):
    """The test code location served by another interpreter path of this environment."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def create_origins(self) -> Sequence[CodeLocationOrigin]:
        return [
            location_origin_from_module_name(
                MODULE, "defs", str(REPO_ROOT), "warm_test", executable_path=self.executable
            )
        ]


def test_a_run_the_warm_worker_cannot_take_runs_cold_saying_why(site: Site) -> None:
    instance, _, _, _out = site
    other = Path(sys.executable).with_name(f"python{sys.version_info[0]}.{sys.version_info[1]}")
    if str(other) == sys.executable or not other.exists():
        pytest.skip(f"no second interpreter path beside {sys.executable}")
    with WorkspaceProcessContext(instance, _OtherPython(str(other))) as ctx:
        run_id = _launch(instance, ctx.create_request_context(), "where_job")
        run = _wait(instance, run_id, lambda r: r.is_finished)
    assert run.status == DagsterRunStatus.SUCCESS and WARM_TAG not in run.tags
    assert str(other) in run.tags[COLD_REASON_TAG]


@pytest.mark.parametrize(
    ("env", "config", "named"),
    [
        ({"QPIPE_WARM_WORKERS": "maybe"}, {}, "QPIPE_WARM_WORKERS"),
        ({}, {"idle_timeout_s": 0}, "warm_workers.idle_timeout_s"),
        ({}, {"start_timeout_s": -5}, "warm_workers.start_timeout_s"),
    ],
)
def test_bad_switch_or_config_is_named(
    env: dict[str, str], config: dict, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises((SettingError, ValueError), match=named.replace(".", r"\.")):
        GpuRoutingRunLauncher(warm_workers=config)


def test_a_changed_file_gives_a_new_warm_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "warmpkg_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "defs.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_fingerprint("warmpkg_probe.defs")
    (pkg / "defs.py").write_text("X = 22\n")
    after = code_fingerprint("warmpkg_probe.defs")
    assert before != after
    home = str(tmp_path)
    assert server_name(home, "warmpkg_probe.defs", before) != server_name(
        home, "warmpkg_probe.defs", after
    )


def test_the_warm_worker_refuses_to_fork_with_a_stray_thread() -> None:
    listener, conn = socket.socketpair()
    server = Server(listener, module=MODULE, fingerprint=code_fingerprint(MODULE),
                    idle_timeout=60, preloaded=Preloaded(0, lambda: "", ""))  # fmt: skip
    stop = threading.Event()
    stray = threading.Thread(target=stop.wait, name="stray-pool", daemon=True)
    stray.start()
    try:
        request = {"run_id": "r1", "instance_ref": "{}", "executable": sys.executable,
                   "module": MODULE}  # fmt: skip
        reply = server.handle(request, conn)
    finally:
        stop.set()
        listener.close()
        conn.close()
    assert "stray-pool" in reply["error"] and "cannot fork" in reply["error"]
    assert not server.children


def test_patches_sleep_until_the_next_pool_claim_check_and_read_migrations_once() -> None:
    from alembic.script import ScriptDirectory
    from dagster._core.execution.plan.instance_concurrency_context import (
        InstanceConcurrencyContext,
    )
    from dagster._core.storage.event_log.sqlite import sqlite_event_log
    from dagster._core.storage.sql import get_alembic_config

    from qpipe_dagster.launcher.warm import patches

    class Pending:  # what the executor's wait loop reads of a context with one pending claim
        def __init__(self, due_in: float) -> None:
            self._pending_claims = {"backtest_results"}
            self._pending_timeouts = {"backtest_results": NOW.timestamp() + due_in}

    # Dagster's own answer is min(0, ...): never a sleep, so the waiting run spins a core
    with time_machine.travel(NOW, tick=False):  # both read time.time(): pinned
        assert InstanceConcurrencyContext.interval_to_next_pending_claim_check(Pending(0.75)) <= 0  # type: ignore[arg-type]
        assert patches.pool_wait_interval(Pending(0.75)) == pytest.approx(0.75)
        assert patches.pool_wait_interval(Pending(-5)) == 0.0
    with contextlib.ExitStack() as undo:
        saved = (
            InstanceConcurrencyContext.interval_to_next_pending_claim_check,
            ScriptDirectory.from_config,
        )
        undo.callback(setattr, ScriptDirectory, "from_config", saved[1])
        undo.callback(
            setattr, InstanceConcurrencyContext, "interval_to_next_pending_claim_check", saved[0]
        )
        undo.callback(setattr, patches, "_applied", False)
        patches.apply()
        assert InstanceConcurrencyContext.interval_to_next_pending_claim_check is (
            patches.pool_wait_interval
        )
        config = get_alembic_config(sqlite_event_log.__file__)
        first = ScriptDirectory.from_config(config)
        assert ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__)) is first
        assert first.get_current_head()  # the revisions it read once still resolve


def test_a_run_forked_on_another_host_is_left_to_that_hosts_monitoring(site: Site) -> None:
    instance, _, workspace, _out = site
    run = _wait(instance, _launch(instance, workspace, "where_job"), lambda r: r.is_finished)
    pid, _, created = parse_worker_tag(run.tags[WARM_TAG]) or (0, "", 0.0)
    instance.add_run_tags(run.run_id, {WARM_TAG: f"{pid}@elsewhere.internal:{created:.3f}"})
    moved = instance.get_run_by_id(run.run_id)
    assert moved is not None
    health = instance.run_launcher.check_run_worker_health(moved)
    assert health.status.value == "RUNNING" and "elsewhere.internal" in (health.msg or "")


def test_a_changed_state_key_retires_the_warm_worker(site: Site) -> None:
    """qpipe's key is the active model: runs after `qpipe reembed` must not fork from a worker
    whose resources bound the old model."""
    instance, _, workspace, out = site
    first = _wait(instance, _launch(instance, workspace, "where_job"), lambda r: r.is_finished)
    old_worker = _seen(out, first.run_id)["ppid"]
    (out / "key.txt").write_text("second")  # as `qpipe reembed` switching the model
    skipped = _wait(instance, _launch(instance, workspace, "where_job"), lambda r: r.is_finished)
    assert skipped.status == DagsterRunStatus.SUCCESS and WARM_TAG not in skipped.tags
    assert "'first' -> 'second'" in skipped.tags[COLD_REASON_TAG]
    fresh = _wait(instance, _launch(instance, workspace, "where_job"), lambda r: r.is_finished)
    assert fresh.status == DagsterRunStatus.SUCCESS and WARM_TAG in fresh.tags
    assert _seen(out, fresh.run_id)["ppid"] != old_worker
    # the retired worker exits by itself, and the launcher that started it reaps it at once
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{old_worker}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{old_worker}").exists(), (
        "the retired warm worker lives on (or a zombie)"
    )
