"""Run a command on a real pseudo-terminal and read what a user would see on it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence


def run_on_terminal(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> tuple[int, str]:
    """(exit code, everything written to the terminal); stdin, stdout and stderr are the pty."""
    leader, follower = pty.openpty()
    # a terminal 100 columns wide (a fresh pty reports 0, and tqdm draws a 0-wide bar)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        list(argv),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=dict(env) if env is not None else None,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout), out.decode(errors="replace")
