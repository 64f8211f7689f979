"""Run a command that stops when its parent dies: `python -m qpipe_dagster.with_parent PID CMD…`.

`make run` (devstack) stops its servers itself on Ctrl-C, SIGTERM and SIGHUP, but a SIGKILL
(the OOM killer, `kill -9`, a closed IDE terminal) gives it no chance: `dagster dev` and the
receiver lived on, holding the UI port and the SQLite files, and the next `make run` found the
ports taken. On Linux this wrapper asks the kernel to send the command SIGINT (the signal
devstack itself stops children with) when its parent goes, then becomes the command by exec.
Elsewhere there is no such request, and it only execs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
USAGE = "usage: python -m qpipe_dagster.with_parent PARENT_PID COMMAND [ARG ...]"


def ask_for_signal_on_parent_death(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent exits; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return True


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have this process killed when its parent dies; exit at once if it already has.

    For processes Python starts itself and cannot exec through this module: a run worker's step
    processes (multiprocessing) and the crawl's Pipes child. A run worker killed with `kill -9`
    (or by the OOM killer) left them running as orphans of init, one holding 950 MB (and GPU
    memory on a GPU host) for minutes. SIGKILL, because nothing is left to report to.
    Returns False where the kernel offers no such request (not Linux)."""
    expected = os.getppid() if parent is None else parent
    if not ask_for_signal_on_parent_death(signum):
        return False
    if os.getppid() != expected:  # the parent died before the request took effect
        os.kill(os.getpid(), signum)
    return True


def die_with_run_worker() -> bool:
    """In a step process of the multiprocess executor (a multiprocessing child of the run
    worker): die with the run worker. Anywhere else (code server, run worker, CLI): nothing."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    return die_with_parent(signal.SIGKILL, parent.pid)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    ask_for_signal_on_parent_death(signal.SIGINT)
    if os.getppid() != parent:  # the parent died before the request took effect
        print(f"with_parent: parent {parent} is gone; not starting {command[0]}", file=sys.stderr)
        return 1
    try:
        os.execv(command[0], command)
    except OSError as exc:
        print(f"with_parent: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
