"""`python -m qpipe_dagster.with_parent`: a command started through it ends with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from qpipe_dagster.with_parent import main
from qpipe_dagster_tests.e2e.stack import wait_for

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
)


@linux_only
def test_command_gets_sigint_when_its_parent_is_sigkilled(tmp_path) -> None:
    """A parent that starts `sleep` through the wrapper, then dies by SIGKILL: old code (a plain
    Popen) left the sleep running for its full minute, re-parented to init."""
    parent_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-m", "qpipe_dagster.with_parent",
                                  str(os.getpid()), "/bin/sleep", "60"])
        open({str(tmp_path / "pid")!r}, "w").write(str(child.pid))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    pid_file = tmp_path / "pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "the child's pid")
    child = psutil.Process(int(pid_file.read_text()))
    # exec has replaced the wrapper: the process is `sleep` itself, not a Python parent of it
    wait_for(lambda: child.cmdline()[:1] == ["/bin/sleep"], 30, "the wrapper to exec sleep")
    assert child.ppid() == parent.pid
    parent.kill()
    parent.wait(10)
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10,
             "the child to stop with its parent")  # fmt: skip


def test_a_parent_already_gone_does_not_start_the_command(capsys) -> None:
    """The parent may die between fork and the kernel request: then nothing would stop it."""
    not_my_parent = os.getppid() + 1 if os.getppid() != 1 else 2
    assert main([str(not_my_parent), "/bin/true"]) == 1
    err = capsys.readouterr().err
    assert f"parent {not_my_parent} is gone; not starting /bin/true" in err


@pytest.mark.parametrize("argv", [[], ["123"], ["x", "/bin/true"], ["-1", "/bin/true"]])
def test_bad_arguments_are_a_usage_error(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert (
        "usage: python -m qpipe_dagster.with_parent PARENT_PID COMMAND" in capsys.readouterr().err
    )


def test_a_command_that_cannot_run_is_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.with_parent", str(os.getpid()), "/no/such/server"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 127
    assert "with_parent: cannot run /no/such/server: No such file or directory" in done.stderr


@linux_only
def test_the_request_is_really_made() -> None:
    """PR_GET_PDEATHSIG (2) reads back what the wrapper asked for, in the exec'd command."""
    code = (
        "import ctypes, signal; s = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
    )
    done = subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.with_parent", str(os.getpid()),
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == signal.SIGINT
