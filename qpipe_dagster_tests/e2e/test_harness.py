"""The browser test's harness fails loudly and cleans up: fast checks, no browser needed."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qpipe_dagster_tests.e2e.browser import find_chromium, why_unavailable
from qpipe_dagster_tests.e2e.stack import DevStack, StackError, free_port


def test_bad_chromium_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = tmp_path / "chromium"
    not_executable.write_text("#!/bin/sh\n")
    monkeypatch.setenv("QPIPE_E2E_CHROMIUM", str(not_executable))
    assert find_chromium() is None
    reason = why_unavailable()
    assert reason is not None and "QPIPE_E2E_CHROMIUM" in reason and str(not_executable) in reason

    not_executable.chmod(not_executable.stat().st_mode | stat.S_IXUSR)
    assert find_chromium() == str(not_executable)


def test_stack_that_cannot_start_raises_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    """A taken demo port makes devstack exit; the error says so and quotes the log."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack = DevStack(
            home=tmp_path / "home",
            host="127.0.0.1",
            ui_port=free_port(),
            demo_port=taken.getsockname()[1],
            receiver_port=free_port(),
            log_path=tmp_path / "devstack.log",
        )
        with pytest.raises(StackError) as info:
            stack.start(timeout=60)
    message = str(info.value)
    assert "devstack exited with code" in message
    assert "Address already in use" in message  # the log tail explains why
    assert stack.proc is None  # stop() ran and reaped the process group


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    """Children the devstack starts must not outlive it (they hold ports and SQLite files)."""
    stack = DevStack(
        home=tmp_path,
        host="127.0.0.1",
        ui_port=0,
        demo_port=0,
        receiver_port=0,
        log_path=tmp_path / "log",
    )
    # A stand-in leader that ignores SIGINT and has a grandchild: the worst case for stop().
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)\n"
    )
    stack.proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    pgid = stack.proc.pid
    stack.stop(timeout=1)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
